{{- define "sparsify.name" -}}sparsify-operator{{- end -}}
{{- define "sparsify.fullname" -}}{{ .Release.Name | trunc 40 | trimSuffix "-" }}-sparsify-operator{{- end -}}
{{- define "sparsify.labels" -}}
app.kubernetes.io/name: {{ include "sparsify.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}
{{- define "sparsify.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sparsify.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
{{- define "sparsify.image" -}}{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}{{- end -}}
