{{/* Names and labels shared by every template. */}}

{{- define "r1-operator.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "r1-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "r1-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "r1-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "r1-operator.labels" -}}
{{ include "r1-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: operator
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{- define "r1-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "r1-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "r1-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
RBAC rules, each with the requests that need it. tests/chart/test_rbac.py runs the operator
against the API emulator, maps every request it makes to (verb, group, resource), and
fails when these rules grant less or more.
*/}}

{{/* Namespaced resources: a ClusterRole rule cluster-wide, a Role rule per namespace. */}}
{{- define "r1-operator.namespacedRules" -}}
# Watched by kopf (list, watch), read afresh before each reconcile (get), patched by kopf
# for its finalizer and progress annotations; reconcile writes the status.
- apiGroups: ["r1-operator.dev"]
  resources: ["deepseekdeployments"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["r1-operator.dev"]
  resources: ["deepseekdeployments/status"]
  verbs: ["patch"]
# Children: listed by label, server-side applied (a patch that also creates), pruned.
- apiGroups: [""]
  resources: ["configmaps", "persistentvolumeclaims", "services"]
  verbs: ["list", "patch", "delete"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["list", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["list", "patch", "delete"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["list", "patch", "delete"]
# Children that kopf also watches, so their progress reaches the status at once: the
# workloads and the engine pre-build Job.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["list", "watch", "patch", "delete"]
- apiGroups: ["leaderworkerset.x-k8s.io"]
  resources: ["leaderworkersets"]
  verbs: ["list", "watch", "patch", "delete"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["list", "watch", "patch", "delete"]
# Pods are only read: their stages (fetching, building, ready) go into the status.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
# Events about DeepSeekDeployments (reconcile's phase changes, kopf's warnings).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- if .Values.peering.enabled }}
{{- if .Values.watchNamespaces }}
# kopf peering in each watched namespace: watch peers, patch its own keep-alive.
- apiGroups: ["kopf.dev"]
  resources: ["kopfpeerings"]
  verbs: ["list", "watch", "patch"]
{{- end }}
{{- end }}
{{- end }}

{{/* Cluster-scoped reads kopf makes in every mode. */}}
{{- define "r1-operator.clusterRules" -}}
# kopf notices CRDs appearing (e.g. LeaderWorkerSet installed after the operator).
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
{{- if .Values.watchNamespaces }}
# kopf lists and watches namespaces when it serves a list of them.
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
{{- else if .Values.peering.enabled }}
# kopf peering, cluster-wide: watch peers, patch its own keep-alive.
- apiGroups: ["kopf.dev"]
  resources: ["clusterkopfpeerings"]
  verbs: ["list", "watch", "patch"]
{{- end }}
{{- end }}
