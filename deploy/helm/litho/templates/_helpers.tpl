{{/* The chart's name, or nameOverride. */}}
{{- define "litho.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's full name: every object's name starts with it. */}}
{{- define "litho.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* A component's object name: <fullname>-<component> (at most 63 characters). */}}
{{- define "litho.componentName" -}}
{{- printf "%s-%s" (include "litho.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The headless Service a gRPC component's callers resolve (every pod's address). */}}
{{- define "litho.headlessName" -}}
{{- printf "%s-%s" (include "litho.fullname" .root) .component | trunc 54 | trimSuffix "-" -}}-headless
{{- end -}}

{{- define "litho.version" -}}
{{- default .Chart.AppVersion .Values.image.tag -}}
{{- end -}}

{{/* Labels every object carries; `component` is optional. */}}
{{- define "litho.labels" -}}
app.kubernetes.io/name: {{ include "litho.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
app.kubernetes.io/version: {{ include "litho.version" .root | replace "+" "_" | trunc 63 | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: litho
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 }}
{{- end -}}

{{/* The minimal selector of one component's pods (never changes across upgrades). */}}
{{- define "litho.selectorLabels" -}}
app.kubernetes.io/name: {{ include "litho.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "litho.image" -}}
{{- printf "%s:%s" .Values.image.repository (include "litho.version" .) -}}
{{- end -}}

{{- define "litho.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "litho.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "litho.secretName" -}}
{{- default (include "litho.fullname" .) .Values.secrets.existingSecret -}}
{{- end -}}

{{/* Secret keys every component reads (the internal gRPC token: every
service serves or dials gRPC). */}}
{{- define "litho.commonSecretKeys" -}}
LITHO_DOCSTORE_URL LITHO_NATS_URL LITHO_S3_ACCESS_KEY_ID LITHO_S3_SECRET_ACCESS_KEY OTEL_EXPORTER_OTLP_HEADERS
{{- if .Values.grpc.token.enabled }} LITHO_GRPC_TOKEN LITHO_GRPC_PREVIOUS_TOKEN{{ end }}
{{- end -}}

{{/* Secret keys without which a component does not start: the pod waits, and its events name the key. */}}
{{- define "litho.requiredSecretKeys" -}}
LITHO_DOCSTORE_URL LITHO_RENDERER_RENDER_ID_SECRET LITHO_BINDING_SECRET_KEY LITHO_EXPERIMENT_HANDLE_KEY
{{- if .Values.grpc.token.enabled }} LITHO_GRPC_TOKEN{{ end }}
{{- end -}}

{{/* Where the gRPC TLS Secret (grpc.tls.secretName) is mounted in every pod. */}}
{{- define "litho.grpcTlsDir" -}}
/etc/litho/grpc-tls
{{- end -}}

{{/* Secret keys a component reads: the common ones and its own `secretEnv`. */}}
{{- define "litho.componentSecretKeys" -}}
{{- $keys := splitList " " (include "litho.commonSecretKeys" .root) -}}
{{- concat $keys .values.secretEnv | uniq | join " " -}}
{{- end -}}

{{/* The base URL of images in answers: config.publicUrl, else the first ingress host. */}}
{{- define "litho.publicUrl" -}}
{{- if .Values.config.publicUrl -}}
{{- .Values.config.publicUrl -}}
{{- else if and .Values.ingress.enabled .Values.ingress.hosts -}}
{{- $host := (first .Values.ingress.hosts).host -}}
{{- printf "%s://%s" (ternary "https" "http" (gt (len .Values.ingress.tls) 0)) $host -}}
{{- end -}}
{{- end -}}

{{/* Replicas a component keeps at least: the autoscaler's minimum when it is on. */}}
{{- define "litho.minReplicas" -}}
{{- if .autoscaling.enabled -}}{{ .autoscaling.minReplicas }}{{- else -}}{{ .replicas }}{{- end -}}
{{- end -}}

{{/* An environment value as text: whole numbers without an exponent (values
arrive as float64, and 10485760 would print as 1.048576e+07). */}}
{{- define "litho.envValue" -}}
{{- if and (kindIs "float64" .) (eq . (floor .)) -}}
{{- int64 . -}}
{{- else -}}
{{- toString . -}}
{{- end -}}
{{- end -}}
