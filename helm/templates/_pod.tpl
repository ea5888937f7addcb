{{/*
The one pod template of every service Deployment. Call with
(dict "root" $ "name" "tracking" "component" $c).
*/}}
{{- define "lastmile.podTemplate" -}}
{{- $root := .root }}
{{- $c := .component }}
metadata:
  labels:
    {{- include "lastmile.componentLabels" . | nindent 4 }}
  annotations:
    # A changed setting or secret rolls the pods.
    checksum/config: {{ include (print $root.Template.BasePath "/config.yaml") $root | sha256sum }}
spec:
  serviceAccountName: {{ include "lastmile.serviceAccountName" $root }}
  {{- with $root.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml $root.Values.podSecurityContext | nindent 4 }}
  # Streams drain within shutdownGraceS; the kubelet waits a little longer before SIGKILL.
  terminationGracePeriodSeconds: {{ add (int (default 5 $root.Values.config.shutdownGraceS)) 10 }}
  containers:
    - name: {{ .name }}
      image: {{ include "lastmile.image" $root }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      args: ["python", "-m", {{ .name | quote }}]
      securityContext:
        {{- toYaml $root.Values.securityContext | nindent 8 }}
      envFrom:
        - configMapRef:
            name: {{ include "lastmile.fullname" $root }}-config
        - secretRef:
            name: {{ include "lastmile.secretName" $root }}
      {{- with $c.config }}
      env:
        {{- range $key, $value := . }}
        - name: {{ include "lastmile.envName" $key }}
          value: {{ $value | toString | quote }}
        {{- end }}
      {{- end }}
      ports:
        - name: grpc
          containerPort: {{ $c.port }}
          protocol: TCP
        - name: metrics
          containerPort: {{ $root.Values.metrics.port }}
          protocol: TCP
      # Native gRPC probes against grpc.health.v1 (NOT_SERVING while draining).
      startupProbe:
        grpc:
          port: {{ $c.port }}
        periodSeconds: 2
        failureThreshold: 90
      readinessProbe:
        grpc:
          port: {{ $c.port }}
        periodSeconds: 5
        failureThreshold: 2
      livenessProbe:
        grpc:
          port: {{ $c.port }}
        periodSeconds: 10
        failureThreshold: 3
      resources:
        {{- toYaml $c.resources | nindent 8 }}
      volumeMounts:
        - name: tmp
          mountPath: /tmp
        {{- if $c.mountGraph }}
        - name: graph
          mountPath: {{ include "lastmile.graphDir" $root }}
          readOnly: true
        {{- end }}
  volumes:
    - name: tmp
      emptyDir: {}
    {{- if $c.mountGraph }}
    - name: graph
      persistentVolumeClaim:
        claimName: {{ include "lastmile.graphClaim" $root }}
        readOnly: true
    {{- end }}
  {{- with $c.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $c.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if $c.affinity }}
  affinity:
    {{- toYaml $c.affinity | nindent 4 }}
  {{- else }}
  # Replicas of one service spread over nodes so that one node lost is one replica lost.
  topologySpreadConstraints:
    - maxSkew: 1
      topologyKey: kubernetes.io/hostname
      whenUnsatisfiable: ScheduleAnyway
      labelSelector:
        matchLabels:
          {{- include "lastmile.componentSelector" . | nindent 10 }}
  {{- end }}
{{- end }}
