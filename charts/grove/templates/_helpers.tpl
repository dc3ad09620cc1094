{{/* The release's objects: <release>-grove, or <release> when it says grove already. */}}
{{- define "grove.fullname" -}}
{{- if contains "grove" .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-grove" .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The launcher's instance (kube.instance: a DNS label of at most 20 characters). */}}
{{- define "grove.instance" -}}
{{- .Release.Name | lower | trunc 20 | trimSuffix "-" -}}
{{- end -}}

{{- define "grove.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/part-of: grove
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{- define "grove.coordinatorSelector" -}}
app.kubernetes.io/name: grove-coordinator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: coordinator
{{- end -}}

{{/* The labels of worker pods; the builtin launcher's pods (crates/kube/src/job.rs) have these too. */}}
{{- define "grove.workerSelector" -}}
app.kubernetes.io/name: grove-worker
app.kubernetes.io/instance: {{ include "grove.instance" . }}
app.kubernetes.io/component: worker
{{- end -}}

{{- define "grove.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "grove.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "grove.workerServiceAccountName" -}}
{{- printf "%s-worker" (include "grove.fullname" .) -}}
{{- end -}}

{{- define "grove.tokenSecretName" -}}
{{- default (printf "%s-token" (include "grove.fullname" .)) .Values.token.existingSecret -}}
{{- end -}}

{{- define "grove.image" -}}
{{- printf "%s:%s" .image.repository (default .chart.AppVersion .image.tag) -}}
{{- end -}}

{{/* The bundled NATS's name, as the nats chart computes it. */}}
{{- define "grove.natsFullname" -}}
{{- if .Values.nats.fullnameOverride -}}
{{- .Values.nats.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains "nats" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-nats" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "grove.natsUrl" -}}
{{- if .Values.nats.enabled -}}
{{- printf "nats://%s.%s.svc:4222" (include "grove.natsFullname" .) .Release.Namespace -}}
{{- else -}}
{{- .Values.externalNats.url -}}
{{- end -}}
{{- end -}}

{{/* The coordinator's git endpoint as worker pods reach it. */}}
{{- define "grove.gitUrl" -}}
{{- printf "%s://%s.%s.svc:%d/git" (ternary "https" "http" .Values.tls.enabled) (include "grove.fullname" .) .Release.Namespace (int .Values.service.port) -}}
{{- end -}}

{{/* A Duration in seconds, as grove's flags and grove.toml spell it. */}}
{{- define "grove.secs" -}}
{{- printf "%ds" (int .) -}}
{{- end -}}

{{/*
The refusals: values that cannot work together. Included by every template that depends on
them, so `helm template` and `helm install` fail before anything is made.
*/}}
{{- define "grove.validate" -}}
{{- $l := .Values.cloud.launcher -}}
{{- if not (has $l (list "builtin" "keda" "none")) -}}
{{- fail (printf "cloud.launcher %q: builtin, keda or none" $l) -}}
{{- end -}}
{{- if and .Values.nats.enabled .Values.externalNats.url -}}
{{- fail "nats.enabled and externalNats.url: choose one (set nats.enabled=false to use an external NATS)" -}}
{{- end -}}
{{- if and (not .Values.nats.enabled) (not .Values.externalNats.url) -}}
{{- fail "no NATS: keep nats.enabled=true or set externalNats.url" -}}
{{- end -}}
{{- if and .Values.nats.enabled (not .Values.nats.config.jetstream.enabled) -}}
{{- fail "nats.config.jetstream.enabled=false: grove's tasks, events and worker registry are JetStream streams" -}}
{{- end -}}
{{- if and .Values.tls.enabled (not .Values.tls.secretName) -}}
{{- fail "tls.enabled needs tls.secretName (a kubernetes.io/tls Secret)" -}}
{{- end -}}
{{- if and (eq $l "keda") (not .Values.nats.enabled) (not .Values.cloud.keda.monitoringEndpoint) -}}
{{- fail "cloud.launcher=keda with an external NATS needs cloud.keda.monitoringEndpoint (its monitoring host:port)" -}}
{{- end -}}
{{- if and (eq $l "builtin") (not .Values.rbac.create) (not .Values.serviceAccount.name) -}}
{{- fail "cloud.launcher=builtin with rbac.create=false: name a serviceAccount.name that may create Jobs and Secrets here" -}}
{{- end -}}
{{- if lt (int .Values.cloud.terminationGracePeriodSeconds) 10 -}}
{{- fail "cloud.terminationGracePeriodSeconds: 10 or more (the worker pushes the agent's work and hands the task back in it)" -}}
{{- end -}}
{{- end -}}

{{/* A requests/limits map with every quantity a string, as grove.toml and the launcher have them. */}}
{{- define "grove.quantities" -}}
{{- $res := dict -}}
{{- $in := . -}}
{{- range $kind := list "requests" "limits" -}}
{{- $m := dict -}}
{{- range $k, $v := (get $in $kind | default dict) -}}
{{- $_ := set $m $k (toString $v) -}}
{{- end -}}
{{- if $m }}{{- $_ := set $res $kind $m -}}{{- end -}}
{{- end -}}
{{- toJson $res -}}
{{- end -}}

{{/* The worker's command line after the image's entrypoint (`grove`): as job.rs's worker_args. */}}
{{- define "grove.workerArgs" -}}
{{- $grace := int .Values.cloud.terminationGracePeriodSeconds -}}
{{- $keep := max 5 (div $grace 5) -}}
- worker
- --pool
- {{ .Values.cloud.pool | quote }}
- --capacity
- "1"
- --clone
- --exit-when-idle
- {{ include "grove.secs" .Values.cloud.idleExitSeconds | quote }}
- --drain-timeout
- {{ include "grove.secs" (sub $grace $keep) | quote }}
- --git-token-file
- /var/run/grove/git/token
- --id
- $(GROVE_POD_NAME)
{{- end -}}

{{/*
The cloud pool's worker pod template, for the KEDA ScaledJob: field for field what the builtin
launcher builds from the grove.toml this chart renders (crates/kube/src/job.rs), so the two
modes run the same pod. The chart's test compares them.
*/}}
{{- define "grove.workerPodTemplate" -}}
{{- $c := .Values.cloud -}}
metadata:
  labels:
    {{- include "grove.workerSelector" . | nindent 4 }}
    app.kubernetes.io/managed-by: grove
    grove.dev/pool: {{ $c.pool | quote }}
  annotations:
    {{- with $c.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
    cluster-autoscaler.kubernetes.io/safe-to-evict: "false"
    karpenter.sh/do-not-disrupt: "true"
spec:
  restartPolicy: Never
  serviceAccountName: {{ include "grove.workerServiceAccountName" . }}
  automountServiceAccountToken: false
  enableServiceLinks: false
  terminationGracePeriodSeconds: {{ int $c.terminationGracePeriodSeconds }}
  securityContext:
    runAsNonRoot: true
    runAsUser: 1000
    runAsGroup: 1000
    fsGroup: 1000
    seccompProfile:
      type: RuntimeDefault
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- range . }}
    - name: {{ . }}
    {{- end }}
  {{- end }}
  {{- with $c.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $c.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $c.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- with $c.runtimeClassName }}
  runtimeClassName: {{ . }}
  {{- end }}
  containers:
    - name: worker
      image: {{ include "grove.image" (dict "image" .Values.image.worker "chart" .Chart) }}
      imagePullPolicy: {{ .Values.image.worker.pullPolicy }}
      args:
        {{- include "grove.workerArgs" . | nindent 8 }}
      env:
        - name: GROVE_NATS
          value: {{ include "grove.natsUrl" . | quote }}
        - name: GROVE_HOME
          value: /workspace
        - name: HOME
          value: /home/grove
        - name: NO_COLOR
          value: "1"
        - name: GROVE_POD_NAME
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        {{- if and (not .Values.nats.enabled) .Values.externalNats.tokenSecret.name }}
        - name: GROVE_NATS_TOKEN
          valueFrom:
            secretKeyRef:
              name: {{ .Values.externalNats.tokenSecret.name }}
              key: {{ .Values.externalNats.tokenSecret.key }}
              optional: false
        {{- end }}
      {{- with $c.agentSecrets }}
      envFrom:
        {{- range . }}
        - secretRef:
            name: {{ . }}
            optional: false
        {{- end }}
      {{- end }}
      resources:
        {{- include "grove.quantities" $c.resources | fromJson | toYaml | nindent 8 }}
      securityContext:
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        runAsNonRoot: true
        runAsUser: 1000
        runAsGroup: 1000
        capabilities:
          drop: [ALL]
        seccompProfile:
          type: RuntimeDefault
      volumeMounts:
        - name: workspace
          mountPath: /workspace
        - name: home
          mountPath: /home/grove
        - name: tmp
          mountPath: /tmp
        - name: git-token
          mountPath: /var/run/grove/git
          readOnly: true
      terminationMessagePolicy: FallbackToLogsOnError
  volumes:
    - name: workspace
      emptyDir:
        sizeLimit: {{ $c.workspaceSize }}
    - name: home
      emptyDir:
        sizeLimit: 1Gi
    - name: tmp
      emptyDir:
        sizeLimit: 1Gi
    - name: git-token
      secret:
        {{- /* KEDA's pods are not the launcher's: they read the API token (git accepts it). */}}
        secretName: {{ include "grove.tokenSecretName" . }}
        defaultMode: 0440
        optional: false
{{- end -}}
