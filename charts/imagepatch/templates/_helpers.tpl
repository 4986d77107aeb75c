{{/*
The chart's name, truncated to 63 characters (a DNS label).
*/}}
{{- define "imagepatch.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of the release's objects: the release name, unless it already
contains the chart name, then "<release>-<chart>".
*/}}
{{- define "imagepatch.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "imagepatch.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every object.
*/}}
{{- define "imagepatch.labels" -}}
helm.sh/chart: {{ include "imagepatch.chart" . }}
{{ include "imagepatch.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: operator
{{- end }}

{{/*
The labels the Deployment selects its pod by, and the Service selects it by.
*/}}
{{- define "imagepatch.selectorLabels" -}}
app.kubernetes.io/name: {{ include "imagepatch.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The ServiceAccount the operator runs as (and the RBAC is bound to).
*/}}
{{- define "imagepatch.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "imagepatch.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The operator image: repository@digest when a digest is given, else repository:tag
(the tag defaults to the chart's appVersion).
*/}}
{{- define "imagepatch.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The arguments of `imagepatch run`, one per line, built from the values.
*/}}
{{- define "imagepatch.args" -}}
- run
- --liveness-endpoint
- {{ printf "http://0.0.0.0:%d/healthz" (int .Values.health.port) | quote }}
{{- with .Values.aws.region }}
- --aws-region
- {{ . | quote }}
{{- end }}
{{- with .Values.aws.eventsQueueUrl }}
- --events-queue-url
- {{ . | quote }}
{{- end }}
{{- range .Values.watchNamespaces }}
- --namespace
- {{ . | quote }}
{{- end }}
{{- range $host, $url := .Values.registry.endpoints }}
- --registry-endpoint
- {{ printf "%s=%s" $host $url | quote }}
{{- end }}
{{- range .Values.registry.insecure }}
- --insecure-registry
- {{ . | quote }}
{{- end }}
{{- range .Values.registry.allowNetworks }}
- --registry-allow-network
- {{ . | quote }}
{{- end }}
- --build-namespace
- {{ .Values.builds.namespace | quote }}
- --detect-tick
- {{ .Values.detectTick | toString | quote }}
- --lease-name
- {{ include "imagepatch.fullname" . | quote }}
{{- if .Values.metrics.enabled }}
- --metrics-port
- {{ .Values.metrics.port | toString | quote }}
{{- end }}
{{- if .Values.securityHub.enabled }}
- --securityhub
- --cluster-name
- {{ required "securityHub.clusterName is required with securityHub.enabled" .Values.securityHub.clusterName | quote }}
{{- end }}
{{- if .Values.verbose }}
- --verbose
{{- end }}
{{- range .Values.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end }}
