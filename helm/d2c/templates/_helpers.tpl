{{/*
Names and labels. Components: gateway, orders, inventory, payments, catalog,
customers, projector, topology.
*/}}

{{- define "d2c.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "d2c.fullname" -}}
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

{{- define "d2c.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The name of a component's objects: (dict "root" $ "component" "orders") */}}
{{- define "d2c.componentName" -}}
{{- printf "%s-%s" (include "d2c.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every object of the release. */}}
{{- define "d2c.labels" -}}
helm.sh/chart: {{ include "d2c.chart" . }}
app.kubernetes.io/name: {{ include "d2c.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: d2c
{{- end -}}

{{/* Selector labels of a component: (dict "root" $ "component" "orders") */}}
{{- define "d2c.selectorLabels" -}}
app.kubernetes.io/name: {{ include "d2c.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* All labels of a component's objects: (dict "root" $ "component" "orders") */}}
{{- define "d2c.componentLabels" -}}
{{ include "d2c.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "d2c.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "d2c.secretName" -}}
{{- default (printf "%s-secrets" (include "d2c.fullname" .)) .Values.secrets.name -}}
{{- end -}}

{{/* A consumer group: (dict "root" $ "name" "orders" "values" $p) */}}
{{- define "d2c.group" -}}
{{- default (printf "%s%s" .root.Values.topicPrefix .name) .values.groupId -}}
{{- end -}}

{{/*
A number as an env value: integral floats (how Helm reads every number in
values) printed without an exponent, so 3600000 stays "3600000".
*/}}
{{- define "d2c.num" -}}
{{- if and (kindIs "float64" .) (eq . (float64 (int64 .))) -}}
{{- int64 . | toString | quote -}}
{{- else -}}
{{- toString . | quote -}}
{{- end -}}
{{- end -}}

{{/* A map of plain env vars as env entries. */}}
{{- define "d2c.envMap" -}}
{{- range $key, $value := . }}
- name: {{ $key }}
  value: {{ include "d2c.num" $value }}
{{- end }}
{{- end -}}

{{/* A required key of the release's Secret as an env entry: (dict "root" $ "env" "D2C_X" "key" "k" "optional" false) */}}
{{- define "d2c.secretEnv" -}}
- name: {{ .env }}
  valueFrom:
    secretKeyRef:
      name: {{ include "d2c.secretName" .root }}
      key: {{ .key }}
      optional: {{ .optional | default false }}
{{- end -}}

{{/* librdkafka properties passed through to every Kafka client: kafka.properties as plain env, kafka.secretProperties from the release's Secret. */}}
{{- define "d2c.kafkaEnv" -}}
{{- $root := . -}}
- name: D2C_KAFKA_BROKERS
  value: {{ .Values.kafka.brokers | quote }}
{{- range $property, $value := .Values.kafka.properties }}
- name: {{ printf "D2C_KAFKA__%s" ($property | upper | replace "." "_" | replace "-" "_") }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- range $property, $key := .Values.kafka.secretProperties }}
- name: {{ printf "D2C_KAFKA__%s" ($property | upper | replace "." "_" | replace "-" "_") }}
  valueFrom:
    secretKeyRef:
      name: {{ include "d2c.secretName" $root }}
      key: {{ $key }}
{{- end }}
{{- end -}}

{{/* Env shared by every consumer and the gateway. */}}
{{- define "d2c.commonEnv" -}}
{{ include "d2c.kafkaEnv" . }}
- name: D2C_TOPIC_PREFIX
  value: {{ .Values.topicPrefix | quote }}
- name: D2C_FETCH_WAIT_MS
  value: {{ include "d2c.num" .Values.fetchWaitMs }}
- name: D2C_LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
{{- end -}}

{{/* Pod-level scheduling and security settings: (dict "root" $ "component" "orders") */}}
{{- define "d2c.podSpecCommon" -}}
{{- $root := .root -}}
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $root.Values.serviceAccountName }}
serviceAccountName: {{ . }}
{{- end }}
automountServiceAccountToken: false
terminationGracePeriodSeconds: {{ $root.Values.terminationGracePeriodSeconds }}
securityContext:
  {{- toYaml $root.Values.podSecurityContext | nindent 2 }}
{{- with $root.Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $root.Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $root.Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if $root.Values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- range $root.Values.topologySpreadConstraints }}
  - {{ toYaml . | nindent 4 | trim }}
    labelSelector:
      matchLabels:
        {{- include "d2c.selectorLabels" (dict "root" $root "component" $.component) | nindent 8 }}
  {{- end }}
{{- end }}
{{- end -}}

{{/* Probes on a named port: (dict "root" $ "port" "admin") */}}
{{- define "d2c.probes" -}}
startupProbe:
  httpGet:
    path: /health
    port: {{ .port }}
  {{- toYaml .root.Values.probes.startup | nindent 2 }}
livenessProbe:
  httpGet:
    path: /health
    port: {{ .port }}
  {{- toYaml .root.Values.probes.liveness | nindent 2 }}
readinessProbe:
  httpGet:
    path: /ready
    port: {{ .port }}
  {{- toYaml .root.Values.probes.readiness | nindent 2 }}
{{- end -}}
