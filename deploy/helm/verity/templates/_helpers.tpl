{{/* Names */}}
{{- define "verity.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "verity.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 30 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 30 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 30 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Labels: call with (dict "root" $ "component" "sequencer"), and "pool" for one prover pool's */}}
{{- define "verity.selectorLabels" -}}
app.kubernetes.io/name: {{ include "verity.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- with .pool }}
verity.io/prover-pool: {{ . }}
{{- end }}
{{- end -}}

{{- define "verity.labels" -}}
{{ include "verity.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: verity
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Image of a Verity service: (dict "root" $ "values" .Values.sequencer "name" "sequencer") */}}
{{- define "verity.image" -}}
{{- $repo := default (printf "%s/verity-%s" .root.Values.image.registry .name) .values.image.repository -}}
{{- $tag := default (default .root.Chart.AppVersion .root.Values.image.tag) .values.image.tag -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}

{{/* The NATS URL every service uses. */}}
{{- define "verity.natsUrl" -}}
{{- if .Values.nats.enabled -}}
{{- printf "nats://%s-nats:4222" (include "verity.fullname" .) -}}
{{- else -}}
{{- .Values.nats.url -}}
{{- end -}}
{{- end -}}

{{/* The names the bundled NATS server's certificate must carry (`verity chain init` writes the
same for --fullname and --namespace): the client Service and each pod under the headless one. */}}
{{- define "verity.natsHosts" -}}
{{- $full := include "verity.fullname" . -}}
{{- $ns := .Release.Namespace -}}
- {{ $full }}-nats
- {{ $full }}-nats.{{ $ns }}.svc
- {{ $full }}-nats.{{ $ns }}.svc.cluster.local
- "*.{{ $full }}-nats-headless.{{ $ns }}.svc"
- "*.{{ $full }}-nats-headless.{{ $ns }}.svc.cluster.local"
{{- end -}}

{{/* NATS's monitoring endpoint (host:port), for KEDA. */}}
{{- define "verity.natsMonitoring" -}}
{{- if .Values.nats.enabled -}}
{{- printf "%s-nats.%s.svc:8222" (include "verity.fullname" .) .Release.Namespace -}}
{{- else -}}
{{- .Values.nats.monitoringEndpoint -}}
{{- end -}}
{{- end -}}

{{/* Security contexts: the chart-wide defaults with the component's own merged over them. */}}
{{- define "verity.podSecurityContext" -}}
{{- toYaml (mergeOverwrite (deepCopy .root.Values.podSecurityContext) (default dict .values.podSecurityContext)) -}}
{{- end -}}

{{- define "verity.securityContext" -}}
{{- toYaml (mergeOverwrite (deepCopy .root.Values.securityContext) (default dict .values.securityContext)) -}}
{{- end -}}

{{/* Scheduling fields of a pod spec: (dict "values" .Values.x "affinity" <default affinity or nil>) */}}
{{- define "verity.scheduling" -}}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if .values.affinity }}
affinity:
  {{- toYaml .values.affinity | nindent 2 }}
{{- else if .affinity }}
affinity:
  {{- toYaml .affinity | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Preferred spreading of a component's pods over nodes (the default affinity of stateless pools). */}}
{{- define "verity.spreadAffinity" -}}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "verity.selectorLabels" . | nindent 12 }}
{{- end -}}

{{/* Flags every Verity service takes: (dict "root" $ "port" 7100) */}}
{{- define "verity.commonArgs" -}}
- --grpc-addr=0.0.0.0:{{ .port }}
- --metrics-addr=0.0.0.0:{{ .root.Values.telemetry.metricsPort }}
- --log-format={{ .root.Values.telemetry.logFormat }}
- --log-filter={{ .root.Values.telemetry.logLevel }}
{{- with .root.Values.telemetry.otlpEndpoint }}
- --otlp-endpoint={{ . }}
{{- end }}
{{- end -}}

{{/* Environment every Verity container gets, then the component's extraEnv. */}}
{{- define "verity.env" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- with .values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Container ports: (dict "root" $ "port" 7100) */}}
{{- define "verity.ports" -}}
- name: grpc
  containerPort: {{ .port }}
  protocol: TCP
- name: metrics
  containerPort: {{ .root.Values.telemetry.metricsPort }}
  protocol: TCP
{{- end -}}

{{/*
Probes: readiness and startup on the gRPC health service (grpc.health.v1, the server's overall
status), liveness on /metrics (the process answers HTTP). `startupSeconds` bounds a slow start
(a standby catching up, a prover loading KZG parameters).
*/}}
{{- define "verity.probes" -}}
{{- $port := .port -}}
{{- if and .root .root.Values.tls.enabled }}{{ $port = .root.Values.tls.healthPort }}{{ end -}}
startupProbe:
  grpc:
    port: {{ $port }}
  periodSeconds: 2
  failureThreshold: {{ div (default 120 .startupSeconds) 2 }}
readinessProbe:
  grpc:
    port: {{ $port }}
  periodSeconds: 5
  timeoutSeconds: 2
  failureThreshold: 3
livenessProbe:
  httpGet:
    path: /metrics
    port: metrics
  periodSeconds: 10
  timeoutSeconds: 5
  failureThreshold: 6
{{- end -}}

{{/* The chain's ConfigMap (genesis, appointments) and keys Secret as volumes. */}}
{{- define "verity.chainVolume" -}}
- name: chain
  configMap:
    name: {{ .Values.chain.configMap }}
{{- end -}}

{{/* One key of the keys Secret, mounted as /etc/verity/keys/<item>: (dict "root" $ "item" "sequencer.key") */}}
{{- define "verity.keyVolume" -}}
- name: key
  secret:
    secretName: {{ .root.Values.chain.keysSecret }}
    defaultMode: 0440
    items:
      - key: {{ .item }}
        path: {{ .item }}
{{- end -}}

{{- define "verity.kzgVolume" -}}
- name: kzg
  {{- toYaml .Values.proving.kzgParams.volume | nindent 2 }}
{{- end -}}

{{- define "verity.kzgArgs" -}}
- --kzg-params=/var/lib/verity/kzg/{{ .Values.proving.kzgParams.file }}
{{- with .Values.proving.stepsPerProof }}
- --steps-per-proof={{ . }}
{{- end }}
{{- with .Values.proving.largerSegments }}
- --larger-segments={{ join "," . }}
{{- end }}
{{- end -}}

{{/* Volumes a read-only root filesystem needs: a writable /tmp. */}}
{{/* The gRPC TLS flags of a component (tls.enabled): (dict "root" $) */}}
{{- define "verity.tlsArgs" -}}
{{- include "verity.natsAuthArgs" . }}
{{- if .root.Values.tls.enabled }}
- --tls-cert=/etc/verity/tls/tls.crt
- --tls-key=/etc/verity/tls/tls.key
- --tls-ca=/etc/verity/tls/ca.crt
- --health-addr=0.0.0.0:{{ .root.Values.tls.healthPort }}
{{- end }}
{{- end -}}

{{/* The NATS nkey flag of a component (nats.auth.enabled): (dict "root" $) */}}
{{- define "verity.natsAuthArgs" -}}
{{- if .root.Values.nats.auth.enabled }}
- --nats-nkey-file=/etc/verity/nats/nkey
{{- end }}
{{- if .root.Values.nats.tls.enabled }}
- --nats-tls-ca=/etc/verity/tls/ca.crt
{{- end }}
{{- end -}}

{{/* The mount of a component's TLS Secret: (dict "root" $) */}}
{{- define "verity.tlsMount" -}}
{{- if .root.Values.tls.enabled }}
- name: tls
  mountPath: /etc/verity/tls
  readOnly: true
{{- end }}
{{- if .root.Values.nats.auth.enabled }}
- name: nats-key
  mountPath: /etc/verity/nats
  readOnly: true
{{- end }}
{{- end -}}

{{/* A component's own TLS Secret as a volume: (dict "root" $ "component" "ingress") */}}
{{- define "verity.tlsVolume" -}}
{{- if .root.Values.tls.enabled }}
- name: tls
  secret:
    secretName: {{ .root.Values.tls.secretPrefix }}-{{ .component }}
    defaultMode: 0440
{{- end }}
{{- if .root.Values.nats.auth.enabled }}
- name: nats-key
  secret:
    secretName: {{ .root.Values.nats.auth.secretPrefix }}-{{ .component }}
    defaultMode: 0440
    items:
      - key: nkey
        path: nkey
{{- end }}
{{- end -}}

{{/* Whom the chain trusts for epoch 0, from the chain ConfigMap, for a genesis that names no
sequencer: the key mini-blocks, seals and the sequencer lease of epoch 0 are signed with (later
epochs' come from governance appointments). */}}
{{- define "verity.sequencerAddressEnv" -}}
- name: VERITY_SEQUENCER_ADDRESS
  valueFrom:
    configMapKeyRef:
      name: {{ .Values.chain.configMap }}
      key: sequencer-address
      optional: true
{{- end -}}

{{- define "verity.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- end -}}

{{/* Service for a component: (dict "root" $ "component" "ingress" "port" 7200 "headless" false) */}}
{{- define "verity.service" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "verity.fullname" .root }}-{{ .component }}{{ if .headless }}-headless{{ end }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "verity.labels" (dict "root" .root "component" .component) | nindent 4 }}
    {{- if or (not .headless) .scrape }}
    verity.io/scrape: "true"
    {{- end }}
spec:
  {{- if .headless }}
  clusterIP: None
  publishNotReadyAddresses: true
  {{- else }}
  type: ClusterIP
  {{- end }}
  selector:
    {{- include "verity.selectorLabels" (dict "root" .root "component" .component) | nindent 4 }}
  ports:
    - name: grpc
      port: {{ .port }}
      targetPort: grpc
      protocol: TCP
    - name: metrics
      port: {{ .root.Values.telemetry.metricsPort }}
      targetPort: metrics
      protocol: TCP
{{- end -}}

{{/* A PodDisruptionBudget: (dict "root" $ "component" "ingress" "maxUnavailable" 1) or "minAvailable"; "pool" for a prover pool's */}}
{{- define "verity.pdb" -}}
{{- $sel := dict "root" .root "component" .component "pool" .pool -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "verity.fullname" .root }}-{{ .component }}{{ with .pool }}-{{ . }}{{ end }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "verity.labels" $sel | nindent 4 }}
spec:
  {{- if hasKey . "minAvailable" }}
  minAvailable: {{ .minAvailable }}
  {{- else }}
  maxUnavailable: {{ .maxUnavailable }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "verity.selectorLabels" $sel | nindent 6 }}
{{- end -}}

{{/* A CPU HorizontalPodAutoscaler for a Deployment: (dict "root" $ "component" "gateway" "values" .Values.gateway) */}}
{{- define "verity.hpa" -}}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "verity.fullname" .root }}-{{ .component }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "verity.labels" (dict "root" .root "component" .component) | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "verity.fullname" .root }}-{{ .component }}
  minReplicas: {{ .values.autoscaling.minReplicas }}
  maxReplicas: {{ .values.autoscaling.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ .values.autoscaling.targetCPUUtilizationPercentage }}
{{- end -}}

{{/* How the prover pool is scaled: keda, verity or fixed. */}}
{{- define "verity.proverScaling" -}}
{{- $mode := .Values.prover.autoscaling.mode -}}
{{- if not .Values.proving.enabled -}}
none
{{- else if eq $mode "auto" -}}
{{- if .Capabilities.APIVersions.Has "keda.sh/v1alpha1/ScaledObject" }}keda{{ else }}verity{{ end -}}
{{- else -}}
{{- $mode -}}
{{- end -}}
{{- end -}}

{{/* The sequencers' Lease (with the standby). */}}
{{- define "verity.sequencerLease" -}}
{{- printf "%s-sequencer" (include "verity.fullname" .) -}}
{{- end -}}

{{/* The components that serve or call gRPC, each with the role its certificate names (JSON). */}}
{{- define "verity.tlsComponents" -}}
{{- $c := dict "sequencer" "sequencer" "ingress" "ingress" "gateway" "gateway" "replica-full" "replica" -}}
{{- if .Values.proving.enabled }}
{{- $_ := set $c "replica-witness" "witness" }}
{{- $_ := set $c "replica-verifier" "verifier" }}
{{- range $pool := .Values.prover.pools }}
{{- $_ := set $c (printf "prover-%s" $pool) "prover" }}
{{- end }}
{{- end }}
{{- if eq (include "verity.proverScaling" .) "verity" }}
{{- $_ := set $c "autoscaler" "autoscaler" }}
{{- end }}
{{- toJson $c -}}
{{- end -}}
