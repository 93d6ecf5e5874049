{{/* Chart name. */}}
{{- define "switchboard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the operator's objects: switchboard-operator for a release named switchboard. */}}
{{- define "switchboard.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- printf "%s-operator" .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s-operator" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "switchboard.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels (stable across upgrades). Quoted: a release named 123 stays a string. */}}
{{- define "switchboard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "switchboard.fullname" . | quote }}
app.kubernetes.io/instance: {{ .Release.Name | quote }}
{{- end }}

{{/* Labels of every object, each key once: commonLabels win over the standard labels,
the selector labels win over both (the selectors must keep matching). */}}
{{- define "switchboard.labels" -}}
{{- $standard := dict
  "app.kubernetes.io/part-of" "switchboard"
  "app.kubernetes.io/version" .Chart.AppVersion
  "app.kubernetes.io/managed-by" .Release.Service
  "helm.sh/chart" (include "switchboard.chart" .) }}
{{- merge (include "switchboard.selectorLabels" . | fromYaml) (deepCopy .Values.commonLabels) $standard | toYaml }}
{{- end }}

{{/* Without serviceAccount.create the name is required (values.schema.json says so too):
falling back to the namespace's `default` ServiceAccount would hand it the operator's
cluster-wide rules. */}}
{{- define "switchboard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "switchboard.fullname" .) .Values.serviceAccount.name }}
{{- else if .Values.serviceAccount.name }}
{{- .Values.serviceAccount.name }}
{{- else }}
{{- fail "serviceAccount.name is required when serviceAccount.create is false: name the existing ServiceAccount the operator runs as (the chart binds its RBAC to it)" }}
{{- end }}
{{- end }}

{{- define "switchboard.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "switchboard.runtimeImage" -}}
{{- printf "%s:%s" .Values.runtime.image.repository (default .Chart.AppVersion .Values.runtime.image.tag) }}
{{- end }}

{{/* The operator's rules on the resources it reconciles and creates, for the ClusterRole
(every namespace) and the per-namespace Roles (watchNamespaces). One source:
files/cluster_role.yaml is config/rbac/cluster_role.yaml (charts/test.sh checks the copy). */}}
{{- define "switchboard.rules" -}}
{{- (.Files.Get "files/cluster_role.yaml" | fromYaml).rules | toYaml }}
{{- end }}
