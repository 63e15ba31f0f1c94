{{/* Names, labels and the image. */}}

{{- define "cnnpc.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "cnnpc.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if eq .Release.Name $name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "cnnpc.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | quote }}
app.kubernetes.io/name: {{ include "cnnpc.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: cnnpc
{{- end }}

{{- define "cnnpc.controllerSelectorLabels" -}}
app.kubernetes.io/name: {{ include "cnnpc.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end }}

{{/* The labels the controller puts on every shard pod: the label contract of
     src/operator/labels.rs (tests/labels.rs checks every selector of this chart against the pods
     and Services the operator's builders produce). A tier is `app.kubernetes.io/component`; the
     pods where requests enter (the plan's first tier) also carry `cnnpc.io/entry: "true"`. */}}
{{- define "cnnpc.shardSelectorLabels" -}}
app.kubernetes.io/name: cnnpc-shard
app.kubernetes.io/managed-by: cnnpc-controller
{{- end }}

{{- define "cnnpc.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "cnnpc.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (printf "%s-controller" (include "cnnpc.fullname" .)) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Who may reach any shard besides the tier before it: the controller (it scrapes shard
     metrics when a CollaborativeInference sets no prometheusUrl) and networkPolicy.extraFrom. */}}
{{- define "cnnpc.shardPeers" -}}
- namespaceSelector:
    matchLabels:
      kubernetes.io/metadata.name: {{ .Release.Namespace }}
  podSelector:
    matchLabels:
      {{- include "cnnpc.controllerSelectorLabels" . | nindent 6 }}
{{- with .Values.networkPolicy.extraFrom }}
{{ toYaml . }}
{{- end }}
{{- end }}
