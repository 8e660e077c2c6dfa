{{/*
Names and labels. fullname is the release name when it contains the chart name (so
`helm install kafka-identity` gives the names of deploy/istio), else <release>-<chart>.
*/}}
{{- define "kafka-identity.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kafka-identity.fullname" -}}
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

{{/* Helm's bookkeeping labels (the comparison with deploy/istio leaves exactly these out). */}}
{{- define "kafka-identity.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "kafka-identity.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* metadata: name, namespace, labels (+ extra labels given as "extra"). */}}
{{- define "kafka-identity.metadata" -}}
name: {{ .name }}
namespace: {{ .root.Release.Namespace }}
labels:
  {{- include "kafka-identity.labels" .root | nindent 2 }}
  {{- with .extra }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end -}}

{{/* The SPIFFE-style principal Istio's AuthorizationPolicies match: <td>/ns/<ns>/sa/<sa>. */}}
{{- define "kafka-identity.principal" -}}
{{- printf "%s/ns/%s/sa/%s" .root.Values.mesh.trustDomain .root.Release.Namespace .sa -}}
{{- end -}}

{{- define "kafka-identity.slotEnv" -}}
{{- printf "KAFKA_IDENTITY_SIGNING_KEY_%s" . -}}
{{- end -}}

{{/*
The filter's configuration (docs/configuration.md): .Values.config plus `waypoint` (mode
waypoint) and `signing` (signing.enabled). Returned as JSON; callers fromJson it.
*/}}
{{- define "kafka-identity.pluginConfig" -}}
{{- $c := deepCopy .Values.config -}}
{{- if eq .Values.mode "waypoint" -}}
{{- $w := dict "peer_principal_filter_state_key" .Values.waypoint.peerPrincipalFilterStateKey -}}
{{- if .Values.waypoint.peerCertificate -}}
{{- $_ := set $w "peer_certificate_filter_state_key" "kafka_identity.hbone_peer_cert" -}}
{{- end -}}
{{- $_ := set $c "waypoint" $w -}}
{{- end -}}
{{- if .Values.signing.enabled -}}
{{- $s := dict "key_id" .Values.signing.keyId "private_key_env" (include "kafka-identity.slotEnv" .Values.signing.activeSlot) "issuer" .Values.signing.issuer "audience" .Values.signing.audience -}}
{{- with .Values.signing.algorithm -}}
{{- $_ := set $s "algorithm" . -}}
{{- end -}}
{{- $_ := set $c "signing" $s -}}
{{- end -}}
{{- toJson $c -}}
{{- end -}}

{{/* wasm.url's scheme: oci, https, http or file. */}}
{{- define "kafka-identity.scheme" -}}
{{- regexReplaceAll "://.*$" .Values.wasm.url "" -}}
{{- end -}}

{{/*
Where the filter attaches: selector (sidecar) or targetRefs (waypoint); the same for a
WasmPlugin and a TrafficExtension.
*/}}
{{- define "kafka-identity.attach" -}}
{{- if eq .Values.mode "waypoint" -}}
targetRefs:
{{- if .Values.waypoint.targetRefs }}
{{- toYaml .Values.waypoint.targetRefs | nindent 2 }}
{{- else }}
  - kind: Gateway
    group: gateway.networking.k8s.io
    name: {{ .Values.waypoint.name }}
{{- end }}
{{- else -}}
selector:
  matchLabels:
    {{- toYaml .Values.brokers.selector | nindent 4 }}
{{- end -}}
{{- end -}}

{{/* The plugin's fields shared by WasmPlugin.spec and TrafficExtension.spec.wasm. */}}
{{- define "kafka-identity.wasmFields" -}}
{{- $scheme := include "kafka-identity.scheme" . -}}
url: {{ .Values.wasm.url }}
{{- if ne $scheme "file" }}
sha256: {{ .Values.wasm.sha256 | quote }}
imagePullPolicy: {{ .Values.wasm.imagePullPolicy }}
{{- with .Values.wasm.imagePullSecret }}
imagePullSecret: {{ . }}
{{- end }}
{{- end }}
pluginName: kafka_identity
pluginConfig:
  {{- include "kafka-identity.pluginConfig" . | fromJson | toYaml | nindent 2 }}
{{- if .Values.signing.enabled }}
vmConfig:
  # Both slots, always: the VM's configuration must not change when the active key does.
  env:
    - name: {{ include "kafka-identity.slotEnv" "A" }}
      valueFrom: HOST
    - name: {{ include "kafka-identity.slotEnv" "B" }}
      valueFrom: HOST
{{- end }}
{{- end -}}

{{/* The plugin's name: <fullname> on sidecars, <fullname>-waypoint on a waypoint. */}}
{{- define "kafka-identity.pluginName" -}}
{{- include "kafka-identity.fullname" . -}}{{- if eq .Values.mode "waypoint" -}}-waypoint{{- end -}}
{{- end -}}

{{/* match: SERVER traffic of the client port. */}}
{{- define "kafka-identity.match" -}}
match:
  - mode: SERVER
    ports:
      - number: {{ .Values.brokers.clientPort }}
{{- end -}}
