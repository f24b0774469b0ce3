{{/*
Names are fixed, as in Skupper 1.x: one site per namespace, and other tools (the skupper
CLI, the controller) find the objects by these names.
*/}}

{{/* Chart label value: name-version. */}}
{{- define "skupper.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Site name: values site.name, else the release namespace. */}}
{{- define "skupper.siteName" -}}
{{- default .Release.Namespace .Values.site.name -}}
{{- end -}}

{{/* Labels common to every object. */}}
{{- define "skupper.labels" -}}
app.kubernetes.io/part-of: skupper
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ include "skupper.chart" . }}
{{- end -}}

{{/* Selector labels of the router pods (also used by the controller to find them). */}}
{{- define "skupper.router.selectorLabels" -}}
application: skupper-router
skupper.io/component: router
{{- end -}}

{{/* Labels of router objects. */}}
{{- define "skupper.router.labels" -}}
{{ include "skupper.labels" . }}
app.kubernetes.io/name: skupper-router
{{ include "skupper.router.selectorLabels" . }}
{{- end -}}

{{/* Selector labels of the controller pod. */}}
{{- define "skupper.controller.selectorLabels" -}}
application: skupper-service-controller
skupper.io/component: controller
{{- end -}}

{{/* Labels of controller objects. */}}
{{- define "skupper.controller.labels" -}}
{{ include "skupper.labels" . }}
app.kubernetes.io/name: skupper-service-controller
{{ include "skupper.controller.selectorLabels" . }}
{{- end -}}

{{/* Image reference: include "skupper.image" (list . .Values.router.image.repository) */}}
{{- define "skupper.image" -}}
{{- $root := index . 0 -}}
{{- $repository := index . 1 -}}
{{- $tag := default $root.Chart.AppVersion $root.Values.image.tag -}}
{{- if $root.Values.image.registry -}}
{{- printf "%s/%s:%s" (trimSuffix "/" $root.Values.image.registry) $repository $tag -}}
{{- else -}}
{{- printf "%s:%s" $repository $tag -}}
{{- end -}}
{{- end -}}

{{/* Pod security context (every pod). */}}
{{- define "skupper.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
fsGroup: {{ .Values.securityContext.fsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container security context (every container). */}}
{{- define "skupper.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop:
    - ALL
{{- end -}}

{{/* resources: requests always, limits when given. Argument: a resources value. */}}
{{- define "skupper.resources" -}}
requests:
  {{- toYaml .requests | nindent 2 }}
{{- if .limits }}
limits:
  {{- toYaml .limits | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Scheduling fields of a pod spec. Argument: a component's values. */}}
{{- define "skupper.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* imagePullSecrets of a pod spec. */}}
{{- define "skupper.imagePullSecrets" -}}
{{- with .Values.image.pullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
Router ports exposed to other sites: name and port. Shared by the Service, the Routes, the
Ingress and the NetworkPolicy.
*/}}
{{- define "skupper.router.exposedPorts" -}}
inter-router: 55671
edge: 45671
claims: 8081
{{- end -}}

{{/*
spec of an OpenShift Route that passes TLS through to a port of a Service (whatever is behind
it terminates TLS itself). Argument: dict "service" NAME "port" PORT-NAME "host" HOST-OR-EMPTY.
*/}}
{{- define "skupper.passthroughRouteSpec" -}}
{{- with .host }}
host: {{ . }}
{{- end }}
to:
  kind: Service
  name: {{ .service }}
  weight: 100
port:
  targetPort: {{ .port }}
tls:
  termination: passthrough
  insecureEdgeTerminationPolicy: None
wildcardPolicy: None
{{- end -}}
