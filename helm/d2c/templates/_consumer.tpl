{{/*
One consuming service: a processor (RocksDB state, Deployment or, with
persistent state, StatefulSet) or the projector (no state, Postgres).
Called with (dict "root" $ "name" "orders" "values" $p "projector" false).
*/}}

{{/* Whether a consumer runs as a StatefulSet: persistent RocksDB state. */}}
{{- define "d2c.consumer.stateful" -}}
{{- if and (not .projector) .values.state .values.state.persistent -}}true{{- end -}}
{{- end -}}

{{/* Autoscaling settings of a consumer: the global ones with its overrides. */}}
{{- define "d2c.consumer.autoscaling" -}}
{{- $global := omit .root.Values.autoscaling "enabled" "prometheus" -}}
{{- toYaml (merge (deepCopy (.values.autoscaling | default dict)) (deepCopy $global)) -}}
{{- end -}}

{{- define "d2c.consumer.workload" -}}
{{- $root := .root -}}
{{- $name := .name -}}
{{- $p := .values -}}
{{- $projector := .projector -}}
{{- $ctx := dict "root" $root "component" $name -}}
{{- $fullname := include "d2c.componentName" $ctx -}}
{{- $stateful := include "d2c.consumer.stateful" . -}}
{{- $autoscaled := $root.Values.autoscaling.enabled -}}
apiVersion: apps/v1
kind: {{ if $stateful }}StatefulSet{{ else }}Deployment{{ end }}
metadata:
  name: {{ $fullname }}
  labels:
    {{- include "d2c.componentLabels" $ctx | nindent 4 }}
spec:
  {{- if not $autoscaled }}
  replicas: {{ $p.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "d2c.selectorLabels" $ctx | nindent 6 }}
  {{- if $stateful }}
  serviceName: {{ $fullname }}
  podManagementPolicy: Parallel
  updateStrategy:
    type: RollingUpdate
  {{- else }}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 1
      maxUnavailable: 0
  {{- end }}
  template:
    metadata:
      labels:
        {{- include "d2c.selectorLabels" $ctx | nindent 8 }}
        {{- with $root.Values.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with $root.Values.podAnnotations }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    spec:
      {{- include "d2c.podSpecCommon" $ctx | trim | nindent 6 }}
      containers:
        - name: {{ $name }}
          image: {{ include "d2c.image" $root }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          command: ["d2c-{{ $name }}"]
          ports:
            - name: admin
              containerPort: {{ $root.Values.adminPort }}
              protocol: TCP
          env:
            {{- include "d2c.commonEnv" $root | nindent 12 }}
            - name: D2C_GROUP_ID
              value: {{ include "d2c.group" (dict "root" $root "name" $name "values" $p) | quote }}
            - name: D2C_ADMIN_ADDR
              value: {{ printf "%s:%v" $root.Values.bindAddress $root.Values.adminPort | quote }}
            - name: D2C_SESSION_TIMEOUT_MS
              value: {{ include "d2c.num" $root.Values.sessionTimeoutMs }}
            - name: D2C_MAX_BATCH
              value: {{ include "d2c.num" $p.maxBatch }}
            {{- if $projector }}
            {{- include "d2c.secretEnv" (dict "root" $root "env" "D2C_DATABASE_URL" "key" $root.Values.secrets.keys.databaseUrl) | nindent 12 }}
            - name: D2C_MAINTENANCE_INTERVAL_MS
              value: {{ include "d2c.num" $p.maintenanceIntervalMs }}
            - name: D2C_VERSION_RETENTION_MS
              value: {{ include "d2c.num" $p.versionRetentionMs }}
            - name: D2C_PROJECTOR_NAME
              valueFrom:
                fieldRef:
                  fieldPath: metadata.name
            {{- else }}
            - name: D2C_STATE_DIR
              value: /var/lib/d2c/state
            - name: D2C_SYNC_WRITES
              value: {{ $p.syncWrites | default false | toString | quote }}
            {{- $standby := $p.standby | default "none" | toString }}
            {{- if not (has $standby (list "none" "all")) }}
            {{- fail (printf "processors.%s.standby is %q: use none or all" $name $standby) }}
            {{- end }}
            - name: D2C_STANDBY
              value: {{ $standby | quote }}
            {{- end }}
            {{- if eq $name "payments" }}
            {{- $http := eq (lower (toString $p.provider)) "http" }}
            - name: D2C_PAYMENT_PROVIDER
              value: {{ $p.provider | default "sandbox" | quote }}
            {{- with $p.providerUrl }}
            - name: D2C_PAYMENT_PROVIDER_URL
              value: {{ . | quote }}
            {{- end }}
            - name: D2C_PAYMENT_TIMEOUT_MS
              value: {{ include "d2c.num" $p.timeoutMs }}
            - name: D2C_PAYMENT_RETRY_MAX_MS
              value: {{ include "d2c.num" $p.retryMaxMs }}
            {{- include "d2c.secretEnv" (dict "root" $root "env" "D2C_PAYMENT_PROVIDER_KEY" "key" $root.Values.secrets.keys.paymentProviderKey "optional" (not $http)) | nindent 12 }}
            {{- include "d2c.secretEnv" (dict "root" $root "env" "D2C_PAYMENT_WEBHOOK_SECRET" "key" $root.Values.secrets.keys.paymentWebhookSecret "optional" (not $http)) | nindent 12 }}
            {{- end }}
            {{- with $root.Values.env }}
            {{- include "d2c.envMap" . | trim | nindent 12 }}
            {{- end }}
            {{- with $p.env }}
            {{- include "d2c.envMap" . | trim | nindent 12 }}
            {{- end }}
            {{- with $root.Values.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
            {{- with $p.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          {{- include "d2c.probes" (dict "root" $root "port" "admin") | nindent 10 }}
          resources:
            {{- toYaml $p.resources | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            {{- if not $projector }}
            - name: state
              mountPath: /var/lib/d2c/state
            {{- end }}
      volumes:
        - name: tmp
          emptyDir: {}
        {{- if and (not $projector) (not $stateful) }}
        - name: state
          emptyDir:
            {{- with $p.state.emptyDirSizeLimit }}
            sizeLimit: {{ . }}
            {{- end }}
        {{- end }}
  {{- if $stateful }}
  volumeClaimTemplates:
    - metadata:
        name: state
        labels:
          {{- include "d2c.selectorLabels" $ctx | nindent 10 }}
      spec:
        accessModes: ["ReadWriteOnce"]
        {{- with $p.state.storageClass }}
        storageClassName: {{ . }}
        {{- end }}
        resources:
          requests:
            storage: {{ $p.state.size }}
  {{- end }}
{{- end -}}

{{/* The headless Service of a consumer: /metrics scraping (and the StatefulSet's governing service). */}}
{{- define "d2c.consumer.service" -}}
{{- $ctx := dict "root" .root "component" .name -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "d2c.componentName" $ctx }}
  labels:
    {{- include "d2c.componentLabels" $ctx | nindent 4 }}
    d2c.io/metrics: "true"
spec:
  clusterIP: None
  # Scrape pods that are still restoring (not ready) too.
  publishNotReadyAddresses: true
  selector:
    {{- include "d2c.selectorLabels" $ctx | nindent 4 }}
  ports:
    - name: admin
      port: {{ .root.Values.adminPort }}
      targetPort: admin
      protocol: TCP
{{- end -}}

{{- define "d2c.consumer.pdb" -}}
{{- $ctx := dict "root" .root "component" .name -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "d2c.componentName" $ctx }}
  labels:
    {{- include "d2c.componentLabels" $ctx | nindent 4 }}
spec:
  maxUnavailable: {{ .root.Values.podDisruptionBudget.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "d2c.selectorLabels" $ctx | nindent 6 }}
{{- end -}}

{{/* KEDA ScaledObject: replicas from the consumer group's lag. */}}
{{- define "d2c.consumer.scaledObject" -}}
{{- $root := .root -}}
{{- $ctx := dict "root" $root "component" .name -}}
{{- $as := include "d2c.consumer.autoscaling" . | fromYaml -}}
{{- $group := include "d2c.group" (dict "root" $root "name" .name "values" .values) -}}
{{- $max := min $as.maxReplicas .values.partitions -}}
{{- $min := min $as.minReplicas $max -}}
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: {{ include "d2c.componentName" $ctx }}
  labels:
    {{- include "d2c.componentLabels" $ctx | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: {{ if include "d2c.consumer.stateful" . }}StatefulSet{{ else }}Deployment{{ end }}
    name: {{ include "d2c.componentName" $ctx }}
  minReplicaCount: {{ $min }}
  # Not above the input topic's partitions: more replicas would own nothing.
  maxReplicaCount: {{ $max }}
  pollingInterval: {{ $as.pollingInterval }}
  cooldownPeriod: {{ $as.cooldownPeriod }}
  advanced:
    horizontalPodAutoscalerConfig:
      behavior:
        scaleDown:
          stabilizationWindowSeconds: {{ $as.scaleDownStabilizationSeconds }}
          policies:
            - type: Pods
              value: 1
              periodSeconds: 60
        scaleUp:
          stabilizationWindowSeconds: 0
          policies:
            - type: Percent
              value: 100
              periodSeconds: 60
  triggers:
    - type: prometheus
      metadata:
        serverAddress: {{ $root.Values.autoscaling.prometheus.serverAddress | quote }}
        query: 'sum(d2c_consumer_lag{group="{{ $group }}"})'
        threshold: {{ include "d2c.num" $as.lagPerReplica }}
        activationThreshold: {{ include "d2c.num" $as.activationLag }}
        ignoreNullValues: "true"
{{- end -}}
