{{/* Names, labels, images, and the operator's RBAC rules: each spelled once, here. */}}

{{- define "district-sftp.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "district-sftp.fullname" -}}
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

{{- define "district-sftp.selectorLabels" -}}
app.kubernetes.io/name: {{ include "district-sftp.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "district-sftp.labels" -}}
{{ include "district-sftp.selectorLabels" . }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: district-sftp
{{- end }}

{{- define "district-sftp.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "district-sftp.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The namespaces served, as a JSON list (fromJsonArray it): the given ones or the release's. */}}
{{- define "district-sftp.watchNamespaces" -}}
{{- if .Values.watch.allNamespaces }}
{{- list | toJson }}
{{- else if .Values.watch.namespaces }}
{{- .Values.watch.namespaces | uniq | toJson }}
{{- else }}
{{- list .Release.Namespace | toJson }}
{{- end }}
{{- end }}

{{/* "true" when kopf peering is on: asked for, or implied by more than one replica. */}}
{{- define "district-sftp.peering" -}}
{{- if or .Values.peering.enabled (gt (int .Values.replicaCount) 1) }}true{{ end }}
{{- end }}

{{- define "district-sftp.peeringName" -}}
{{- default (include "district-sftp.fullname" .) .Values.peering.name }}
{{- end }}

{{/* An image reference: repository, then @digest when given, else :tag. */}}
{{- define "district-sftp.imageRef" -}}
{{- if .digest }}
{{- printf "%s@%s" .repository .digest }}
{{- else }}
{{- printf "%s:%s" .repository .tag }}
{{- end }}
{{- end }}

{{- define "district-sftp.image" -}}
{{- include "district-sftp.imageRef" (dict "repository" .Values.image.repository "tag" (default .Chart.AppVersion .Values.image.tag) "digest" .Values.image.digest) }}
{{- end }}

{{/* The data-plane image: districts.image, each empty field taken from image. */}}
{{- define "district-sftp.districtImage" -}}
{{- $own := .Values.districts.image }}
{{- $repository := default .Values.image.repository $own.repository }}
{{- $tag := default (default .Chart.AppVersion .Values.image.tag) $own.tag }}
{{- $digest := $own.digest }}
{{- if and (not $digest) (eq $repository .Values.image.repository) (not $own.tag) }}
{{- $digest = .Values.image.digest }}
{{- end }}
{{- include "district-sftp.imageRef" (dict "repository" $repository "tag" $tag "digest" $digest) }}
{{- end }}

{{/* A resources map as the operator's flag format: cpu=50m,memory=64Mi (keys sorted). */}}
{{- define "district-sftp.quantities" -}}
{{- $items := list }}
{{- range $name, $quantity := . }}
{{- $items = append $items (printf "%s=%v" $name $quantity) }}
{{- end }}
{{- join "," $items }}
{{- end }}

{{/*
The rules the operator needs wherever it serves Districts, derived from what it calls:
operator/district_operator/api.py (every kind it reads or writes), handlers.py (the kopf
watches) and kopf itself. Used by the Role in each watched namespace, and by the ClusterRole
with watch.allNamespaces. Server-side apply of an object that does not exist yet is
authorized as create as well as patch, hence create beside patch.
*/}}
{{- define "district-sftp.namespacedRules" -}}
# Districts: kopf lists and watches them; the operator reads one when a child changes, and
# kopf may patch one (finalizers from older releases). The operator writes status only.
- apiGroups: [districtsftp.io]
  resources: [districts]
  verbs: [get, list, watch, patch]
- apiGroups: [districtsftp.io]
  resources: [districts/status]
  verbs: [patch]
# Owner references with blockOwnerDeletion need this where the
# OwnerReferencesPermissionEnforcement admission plugin is on (OpenShift, hardened clusters).
- apiGroups: [districtsftp.io]
  resources: [districts/finalizers]
  verbs: [update]
# Host keys are created once and completed by a merge patch; authorized keys are applied;
# referenced Secrets (keys, database URI, webhook URL) are read; children are watched.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch, create, patch]
# Children applied with server-side apply and watched for drift.
- apiGroups: [""]
  resources: [persistentvolumeclaims, services]
  verbs: [get, list, watch, create, patch]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, list, watch, create, patch]
# CronJobs are also deleted when a District turns a job off.
- apiGroups: [batch]
  resources: [cronjobs]
  verbs: [get, list, watch, create, patch, delete]
# Finished Jobs are watched, and annotated once their result is recorded.
- apiGroups: [batch]
  resources: [jobs]
  verbs: [list, watch, patch]
# A finished Job's pods are listed for their termination message (the job's result); a
# District server's pods are annotated after its authorized-keys Secret changed, so the
# kubelet rewrites the keys volume at once instead of on its next sync (up to a minute).
- apiGroups: [""]
  resources: [pods]
  verbs: [list, patch]
# Events on Districts, from the operator and from kopf (both post core/v1 Events).
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- if and (include "district-sftp.peering" .) (not .Values.watch.allNamespaces) }}
# kopf peering: watch the namespace's KopfPeering objects, keep this replica alive in ours.
- apiGroups: [kopf.dev]
  resources: [kopfpeerings]
  verbs: [list, watch]
- apiGroups: [kopf.dev]
  resources: [kopfpeerings]
  resourceNames: [{{ include "district-sftp.peeringName" . | quote }}]
  verbs: [patch]
{{- end }}
{{- end }}

{{/*
Rules that only exist cluster-wide, in every mode: kopf watches CustomResourceDefinitions to
notice its resources (re)appearing, and when it serves listed namespaces it watches
Namespaces to start serving one that is created later. Both are only names and schemas.
*/}}
{{- define "district-sftp.clusterRules" -}}
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
{{- if not .Values.watch.allNamespaces }}
- apiGroups: [""]
  resources: [namespaces]
  verbs: [list, watch]
{{- else if include "district-sftp.peering" . }}
# kopf peering across the cluster: one ClusterKopfPeering object.
- apiGroups: [kopf.dev]
  resources: [clusterkopfpeerings]
  verbs: [list, watch]
- apiGroups: [kopf.dev]
  resources: [clusterkopfpeerings]
  resourceNames: [{{ include "district-sftp.peeringName" . | quote }}]
  verbs: [patch]
{{- end }}
{{- end }}

{{/* The scrape jobs the alert rules select by: the Prometheus Operator names a ServiceMonitor's
job after the Service, and a PodMonitor's `<namespace>/<name>`. */}}
{{- define "district-sftp.operatorScrapeJob" -}}
{{ include "district-sftp.fullname" . }}-metrics
{{- end }}

{{- define "district-sftp.podMonitorName" -}}
{{ include "district-sftp.fullname" . | trunc 53 | trimSuffix "-" }}-districts
{{- end }}

{{- define "district-sftp.districtScrapeJob" -}}
{{ .Release.Namespace }}/{{ include "district-sftp.podMonitorName" . }}
{{- end }}

{{/* A runbook link: prometheusRule.runbookBaseUrl (or the docs' path in the source) + #anchor. */}}
{{- define "district-sftp.runbook" -}}
{{ default "docs/operations.md" .root.Values.metrics.prometheusRule.runbookBaseUrl }}#{{ .anchor }}
{{- end }}

{{/* The gateway's name: gateway.name, or <fullname>-gateway (at most 63 characters, as its
Service name and pod label value must be). */}}
{{- define "district-sftp.gatewayName" -}}
{{- if .Values.gateway.name }}
{{- .Values.gateway.name }}
{{- else }}
{{- printf "%s-gateway" (include "district-sftp.fullname" . | trunc 55 | trimSuffix "-") }}
{{- end }}
{{- end }}

{{/* The gateway pods' labels the operator selects them by (names.gateway_selector): the app
name is the operator's own constant, not the chart's nameOverride. */}}
{{- define "district-sftp.gatewaySelectorLabels" -}}
app.kubernetes.io/name: district-sftp
app.kubernetes.io/instance: {{ include "district-sftp.gatewayName" . }}
app.kubernetes.io/component: gateway
{{- end }}

{{- define "district-sftp.gatewayLabels" -}}
{{ include "district-sftp.gatewaySelectorLabels" . }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: district-sftp
{{- end }}

{{/* Refuse what the schema cannot say clearly. */}}
{{- define "district-sftp.gatewayChecks" -}}
{{- if and .Values.gateway.enabled (not .Values.gateway.proxyFrom) }}
{{- fail "gateway.enabled needs gateway.proxyFrom: the gateway pods' addresses as the district servers see them (usually the pod network, for example --set 'gateway.proxyFrom={10.244.0.0/16}')" }}
{{- end }}
{{- if and (eq .Values.districts.serviceMode "shared") (not .Values.gateway.enabled) }}
{{- fail "districts.serviceMode shared needs gateway.enabled: shared-mode Districts are reached through the gateway" }}
{{- end }}
{{- end }}

{{/*
What the operator does in the release namespace for the gateway (docs/gateway.md), derived
from what it calls: district_operator/routepublisher.py lists the routing shards (read back
on start) and writes them by server-side apply, then lists the gateway pods and patches the
routes-revision annotation on them (so the kubelet refreshes their volume at once);
district_operator/gatewaystate.py creates the gateway's two Secrets once, then reads and
patches them by name, and reads the gateway Service for its address.
*/}}
{{- define "district-sftp.gatewayRules" -}}
{{- $gateway := include "district-sftp.gatewayName" . }}
# The routing shards: listed; server-side apply of a new one is authorized as create, of an
# existing one as patch, by name.
- apiGroups: [""]
  resources: [configmaps]
  verbs: [list, create]
- apiGroups: [""]
  resources: [configmaps]
  resourceNames:
    {{- range $shard := until 256 }}
    - {{ printf "%s-routes-%03d" $gateway $shard }}
    {{- end }}
  verbs: [get, patch]
# The gateway's host keys and gateway key: created once, then read and patched by name.
- apiGroups: [""]
  resources: [secrets]
  verbs: [create]
- apiGroups: [""]
  resources: [secrets]
  resourceNames: [{{ printf "%s-host-keys" $gateway }}, {{ printf "%s-key" $gateway }}]
  verbs: [get, patch]
# The gateway pods, found by their labels and annotated with the routes revision.
- apiGroups: [""]
  resources: [pods]
  verbs: [list, patch]
# The gateway Service's address, for shared-mode Districts' status.
- apiGroups: [""]
  resources: [services]
  resourceNames: [{{ $gateway }}]
  verbs: [get]
{{- end }}
