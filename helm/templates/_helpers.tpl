{{/* Names, labels and the checks every template shares. */}}

{{- define "lastmile.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "lastmile.fullname" -}}
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

{{- define "lastmile.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "lastmile.labels" -}}
helm.sh/chart: {{ include "lastmile.chart" . }}
{{ include "lastmile.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "lastmile.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lastmile.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels and selector of one component; call with (dict "root" $ "name" "gateway"). */}}
{{- define "lastmile.componentLabels" -}}
{{ include "lastmile.labels" .root }}
app.kubernetes.io/component: {{ .name }}
{{- end }}

{{- define "lastmile.componentSelector" -}}
{{ include "lastmile.selectorLabels" .root }}
app.kubernetes.io/component: {{ .name }}
{{- end }}

{{- define "lastmile.componentName" -}}
{{- printf "%s-%s" (include "lastmile.fullname" .root) .name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "lastmile.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "lastmile.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "lastmile.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "lastmile.secretName" -}}
{{- default (printf "%s-secrets" (include "lastmile.fullname" .)) .Values.secrets.existingSecret }}
{{- end }}

{{- define "lastmile.graphClaim" -}}
{{- default (printf "%s-graph" (include "lastmile.fullname" .)) .Values.graph.persistence.existingClaim }}
{{- end }}

{{/* In-pod path of the graph volume and the pbf the Job builds from. */}}
{{- define "lastmile.graphDir" -}}/var/lib/lastmile/graph{{- end }}
{{- define "lastmile.osmPbf" -}}
{{- if .Values.graph.osmPbfUrl }}
{{- printf "%s/source/%s" (include "lastmile.graphDir" .) (base .Values.graph.osmPbfUrl) }}
{{- else }}
{{- .Values.graph.osmPbf }}
{{- end }}
{{- end }}

{{/* Endpoints of the backing services: bundled subchart or external, never both. */}}
{{- define "lastmile.databaseUrl" -}}
{{- if .Values.postgresql.enabled }}
{{- $auth := default dict .Values.postgresql.auth }}
{{- printf "postgresql://%s:%s@%s-postgresql:5432/%s" (default "lastmile" $auth.username) (required "postgresql.auth.password is required with the bundled PostgreSQL" $auth.password) .Release.Name (default "lastmile" $auth.database) }}
{{- else }}
{{- $db := .Values.externalDatabase }}
{{- printf "postgresql://%s:%s@%s:%d/%s?sslmode=%s" $db.user $db.password $db.host (int $db.port) $db.database $db.sslMode }}
{{- end }}
{{- end }}

{{- define "lastmile.redisUrl" -}}
{{- if .Values.redis.enabled }}
{{- $auth := default dict .Values.redis.auth }}
{{- printf "redis://:%s@%s-redis-master:6379/0" (required "redis.auth.password is required with the bundled Redis" $auth.password) .Release.Name }}
{{- else }}
{{- $r := .Values.externalRedis }}
{{- printf "%s://%s%s:%d/%d" (ternary "rediss" "redis" $r.tls) (ternary "" (printf ":%s@" $r.password) (empty $r.password)) $r.host (int $r.port) (int $r.db) }}
{{- end }}
{{- end }}

{{- define "lastmile.s3Endpoint" -}}
{{- if .Values.minio.enabled }}{{ printf "%s-minio:9000" .Release.Name }}{{ else }}{{ .Values.externalObjectStorage.endpoint }}{{ end }}
{{- end }}

{{/* Invalid combinations of values fail the render with a message saying what to change. */}}
{{- define "lastmile.validate" -}}
{{- if and .Values.postgresql.enabled .Values.externalDatabase.host }}
{{- fail "postgresql.enabled and externalDatabase.host are both set: use the bundled PostgreSQL or an external one, not both" }}
{{- end }}
{{- if not (or .Values.postgresql.enabled .Values.externalDatabase.host) }}
{{- fail "no database: set externalDatabase.host or postgresql.enabled" }}
{{- end }}
{{- if and .Values.redis.enabled .Values.externalRedis.host }}
{{- fail "redis.enabled and externalRedis.host are both set: use the bundled Redis or an external one, not both" }}
{{- end }}
{{- if not (or .Values.redis.enabled .Values.externalRedis.host) }}
{{- fail "no Redis: set externalRedis.host or redis.enabled" }}
{{- end }}
{{- if and .Values.minio.enabled .Values.externalObjectStorage.endpoint }}
{{- fail "minio.enabled and externalObjectStorage.endpoint are both set: use the bundled MinIO or an external store, not both" }}
{{- end }}
{{- if not (or .Values.minio.enabled .Values.externalObjectStorage.endpoint) }}
{{- fail "no object storage: set externalObjectStorage.endpoint or minio.enabled" }}
{{- end }}
{{- if and .Values.edge.tls.enabled (not .Values.edge.tls.secretName) }}
{{- fail "edge.tls.enabled needs edge.tls.secretName (a kubernetes.io/tls Secret)" }}
{{- end }}
{{- if not .Values.components.gateway.enabled }}
{{- if .Values.edge.enabled }}
{{- fail "the edge sends health checks without a service header to the gateway: enable components.gateway or disable the edge" }}
{{- end }}
{{- end }}
{{- range $name, $c := .Values.components }}
{{- if and $c.autoscaling.enabled (gt (int $c.autoscaling.minReplicas) (int $c.autoscaling.maxReplicas)) }}
{{- fail (printf "components.%s.autoscaling: minReplicas is above maxReplicas" $name) }}
{{- end }}
{{- end }}
{{- $reserved := list "host" "gatewayPort" "trackingPort" "dispatchPort" "podPort" "metricsPort" "databaseUrl" "redisUrl" "s3Endpoint" "s3AccessKey" "s3SecretKey" "s3Secure" "s3Region" "proofBucket" "tokenSecret" "deliveryCodeSecret" "providerCallbackSecret" "osmPbf" "graphDir" "dataDir" }}
{{- range $key, $_ := .Values.config }}
{{- if has $key $reserved }}
{{- fail (printf "config.%s is set by the chart from its own values; see values.yaml" $key) }}
{{- end }}
{{- end }}
{{- end }}

{{/* LASTMILE_* name of a camelCase settings key. */}}
{{- define "lastmile.envName" -}}
{{- printf "LASTMILE_%s" (snakecase . | upper) }}
{{- end }}
