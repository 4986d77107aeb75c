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
The ValidatingAdmissionPolicy (and its binding) that narrows the ServiceAccount's writes.
*/}}
{{- define "imagepatch.admissionPolicyName" -}}
{{- printf "%s-writes" (include "imagepatch.fullname" .) | trunc 63 | trimSuffix "-" }}
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
- --notification-retry-timeout
- {{ .Values.notifications.retryTimeout | toString | quote }}
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
{{- if .Values.awsConfig.enabled }}
{{- if not .Values.securityHub.enabled }}
- --cluster-name
- {{ required "awsConfig.clusterName is required with awsConfig.enabled" .Values.awsConfig.clusterName | quote }}
{{- end }}
- --aws-config-resource-type
- {{ .Values.awsConfig.resourceType | quote }}
{{- if .Values.awsConfig.testMode }}
- --aws-config-test-mode
{{- end }}
{{- end }}
{{- if .Values.nodeSurvey.enabled }}
- --node-survey
- --node-survey-interval
- {{ .Values.nodeSurvey.intervalSeconds | toString | quote }}
{{- end }}
{{- if .Values.argoRollouts.enabled }}
- --argo-rollouts
{{- end }}
{{- if .Values.flagger.enabled }}
- --flagger
{{- end }}
{{- if .Values.verbose }}
- --verbose
{{- end }}
{{- range .Values.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end }}

{{/*
NetworkPolicy ipBlock peers for .cidrs that never admit link-local addresses:
IPv4 169.254.0.0/16 (instance metadata at 169.254.169.254, the EKS Pod
Identity and ECS credential endpoints) and AWS's IPv6 fd00:ec2::/32. A block
that contains that range gets it as `except`; a block inside it is refused, as
is an IPv6 block the chart cannot place (broader than /8, or a ULA block
broader than /32): the API server accepts an `except` only inside its block,
so the chart decides containment itself. .what names the value in errors.
*/}}
{{- define "imagepatch.egressBlocks" -}}
{{- $what := .what }}
{{- range .cidrs }}
{{- $cidr := . }}
{{- $parts := splitList "/" $cidr }}
{{- if ne (len $parts) 2 }}
{{- fail (printf "%s: %q is not a CIDR" $what $cidr) }}
{{- end }}
{{- $ip := index $parts 0 }}
{{- $prefix := atoi (index $parts 1) }}
{{- $except := "" }}
{{- if contains ":" $ip }}
{{- /* IPv6: only the first 32 bits matter for fd00:ec2::/32. */}}
{{- $groups := splitList ":" $ip }}
{{- $g0 := index $groups 0 | lower }}
{{- $g0 = printf "%s%s" (repeat (int (sub 4 (len $g0))) "0") $g0 }}
{{- $g1 := index $groups 1 | lower }}
{{- $g1 = printf "%s%s" (repeat (int (sub 4 (len $g1))) "0") $g1 }}
{{- if gt $prefix 128 }}
{{- fail (printf "%s: %q is not a CIDR" $what $cidr) }}
{{- else if eq $prefix 0 }}
{{- $except = "fd00:ec2::/32" }}
{{- else if lt $prefix 8 }}
{{- fail (printf "%s: %q: use ::/0 or blocks of /8 or narrower (the chart must keep fd00:ec2::/32, instance metadata, out)" $what $cidr) }}
{{- else if has (substr 0 2 $g0) (list "fc" "fd") }}
{{- if lt $prefix 32 }}
{{- fail (printf "%s: %q: a ULA block must be /32 or narrower (the chart must keep fd00:ec2::/32, instance metadata, out)" $what $cidr) }}
{{- else if and (eq $g0 "fd00") (eq $g1 "0ec2") }}
{{- fail (printf "%s: %q lies in fd00:ec2::/32 (instance metadata): never admitted" $what $cidr) }}
{{- end }}
{{- end }}
{{- else }}
{{- $octets := splitList "." $ip }}
{{- if or (ne (len $octets) 4) (gt $prefix 32) }}
{{- fail (printf "%s: %q is not a CIDR" $what $cidr) }}
{{- end }}
{{- $n := add (mul (atoi (index $octets 0)) 16777216) (mul (atoi (index $octets 1)) 65536) (mul (atoi (index $octets 2)) 256) (atoi (index $octets 3)) }}
{{- /* 169.254.0.0 is 2851995648. */}}
{{- if le $prefix 16 }}
{{- $size := 1 }}
{{- range until (int (sub 32 $prefix)) }}
{{- $size = mul $size 2 }}
{{- end }}
{{- if eq (div $n $size) (div 2851995648 $size) }}
{{- if eq $prefix 16 }}
{{- fail (printf "%s: %q is link-local (instance metadata): never admitted" $what $cidr) }}
{{- end }}
{{- $except = "169.254.0.0/16" }}
{{- end }}
{{- else if eq (div $n 65536) 43518 }}
{{- fail (printf "%s: %q lies in 169.254.0.0/16 (instance metadata): never admitted" $what $cidr) }}
{{- end }}
{{- end }}
- ipBlock:
    cidr: {{ $cidr | quote }}
    {{- with $except }}
    except: [{{ . | quote }}]
    {{- end }}
{{- end }}
{{- end }}
