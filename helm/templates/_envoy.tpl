{{/*
The edge's Envoy config. It must equal ops.servers.envoy.render_envoy_config (the local
stack's config) for the same services, with the services' headless DNS names as hosts:
scripts/check-chart.sh renders both, compares them and runs `envoy --mode validate`.
*/}}
{{- define "lastmile.envoyServices" -}}
{{- /* Service order and gRPC package prefixes, as ops.servers.envoy.PACKAGES. */}}
{{- $packages := dict "gateway" (list "/lastmile.driver.v1.") "tracking" (list "/lastmile.tracking.v1.") "dispatch" (list "/lastmile.dispatch.v1." "/lastmile.origin.v1." "/lastmile.integration.v1.") "pod" (list "/lastmile.pod.v1.") }}
{{- $enabled := list }}
{{- range $name := list "gateway" "tracking" "dispatch" "pod" }}
{{- if (get $.Values.components $name).enabled }}
{{- $enabled = append $enabled (dict "name" $name "prefixes" (get $packages $name) "port" (get $.Values.components $name).port) }}
{{- end }}
{{- end }}
{{- toJson $enabled }}
{{- end }}

{{- define "lastmile.envoyRoute" -}}
{{- $types := "type.googleapis.com/envoy.extensions" }}
- match:
    prefix: {{ .prefix | quote }}
    {{- if .header }}
    headers:
      - name: x-lastmile-service
        string_match:
          exact: {{ .header | quote }}
    {{- end }}
  route:
    cluster: {{ .cluster | quote }}
    # Server streams (tracking, fleet, orders) live as long as the client wants.
    timeout: 0s
    max_stream_duration:
      grpc_timeout_header_max: 0s
    {{- if and .hashHeader (eq .cluster "tracking") }}
    hash_policy:
      - header:
          header_name: {{ .hashHeader | quote }}
    {{- end }}
  # Body limit of the route (413 beyond); bidirectional streams (Connect, reflection) are
  # never buffered: the services' gRPC message size limit bounds them instead.
  typed_per_filter_config:
    envoy.filters.http.buffer:
      "@type": {{ printf "%s.filters.http.buffer.v3.BufferPerRoute" $types }}
      {{- if or (hasPrefix "/lastmile.driver.v1." .prefix) (hasPrefix "/grpc.reflection." .prefix) }}
      disabled: true
      {{- else }}
      buffer: {max_request_bytes: {{ .maxBytes | int }}}
      {{- end }}
{{- end }}

{{- define "lastmile.envoyConfig" -}}
{{- $services := include "lastmile.envoyServices" . | fromJsonArray }}
{{- $edge := .Values.edge }}
{{- $types := "type.googleapis.com/envoy.extensions" }}
{{- $shared := list "/grpc.health.v1.Health/" "/grpc.reflection." }}
{{- $allowHeaders := "content-type,x-grpc-web,x-user-agent,grpc-timeout,authorization,x-lastmile-service,keep-alive,user-agent,cache-control" }}
overload_manager:
  resource_monitors:
    - name: envoy.resource_monitors.global_downstream_max_connections
      typed_config:
        "@type": {{ printf "%s.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig" $types }}
        max_active_downstream_connections: 100000
admin:
  address:
    socket_address: {address: 127.0.0.1, port_value: {{ $edge.adminPort }}}
static_resources:
  listeners:
    - name: edge
      address:
        socket_address: {address: 0.0.0.0, port_value: {{ $edge.port }}}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": {{ printf "%s.filters.network.http_connection_manager.v3.HttpConnectionManager" $types }}
                stat_prefix: edge
                codec_type: AUTO
                # Idle server streams (a customer waiting for the next position) must not be cut.
                stream_idle_timeout: 0s
                # Envoy's own 413 (over a route's body limit) reaches gRPC clients as
                # RESOURCE_EXHAUSTED, as the services' own message limit does.
                local_reply_config:
                  mappers:
                    - filter:
                        and_filter:
                          filters:
                            - status_code_filter:
                                comparison:
                                  op: EQ
                                  value: {default_value: 413, runtime_key: lastmile.edge.too_large}
                            - header_filter:
                                header:
                                  name: content-type
                                  string_match: {prefix: application/grpc}
                      headers_to_add:
                        - header: {key: grpc-status, value: "8"}
                          append_action: OVERWRITE_IF_EXISTS_OR_ADD
                route_config:
                  name: lastmile
                  virtual_hosts:
                    - name: lastmile
                      domains: ["*"]
                      routes:
                        {{- range $prefix := $shared }}
                        {{- range $s := $services }}
                        {{- include "lastmile.envoyRoute" (dict "prefix" $prefix "cluster" $s.name "header" $s.name "maxBytes" $edge.maxRequestBytes) | nindent 24 }}
                        {{- end }}
                        {{- end }}
                        {{- range $prefix := $shared }}
                        {{- include "lastmile.envoyRoute" (dict "prefix" $prefix "cluster" "gateway" "maxBytes" $edge.maxRequestBytes) | nindent 24 }}
                        {{- end }}
                        {{- range $s := $services }}
                        {{- range $prefix := $s.prefixes }}
                        {{- include "lastmile.envoyRoute" (dict "prefix" $prefix "cluster" $s.name "hashHeader" $edge.consistentHashHeader "maxBytes" $edge.maxRequestBytes) | nindent 24 }}
                        {{- end }}
                        {{- end }}
                      typed_per_filter_config:
                        envoy.filters.http.cors:
                          "@type": {{ printf "%s.filters.http.cors.v3.CorsPolicy" $types }}
                          # An explicit allow-list: "*" is refused by the schema.
                          allow_origin_string_match:
                            {{- range $origin := $edge.allowedOrigins }}
                            - exact: {{ $origin | quote }}
                            {{- end }}
                          allow_methods: "GET, PUT, DELETE, POST, OPTIONS"
                          # Browsers may send the hash header only if the preflight allows it.
                          allow_headers: {{ ternary (printf "%s,%s" $allowHeaders $edge.consistentHashHeader) $allowHeaders (not (empty $edge.consistentHashHeader)) | quote }}
                          expose_headers: "grpc-status,grpc-message"
                          max_age: "86400"
                # Order matters: grpc-web is translated first, CORS answers preflights, the buffer
                # enforces each route's body limit, router last.
                http_filters:
                  - name: envoy.filters.http.grpc_web
                    typed_config: {"@type": {{ printf "%s.filters.http.grpc_web.v3.GrpcWeb" $types | quote }}}
                  - name: envoy.filters.http.cors
                    typed_config: {"@type": {{ printf "%s.filters.http.cors.v3.Cors" $types | quote }}}
                  - name: envoy.filters.http.buffer
                    typed_config:
                      "@type": {{ printf "%s.filters.http.buffer.v3.Buffer" $types }}
                      max_request_bytes: {{ $edge.maxRequestBytes | int }}
                  - name: envoy.filters.http.router
                    typed_config: {"@type": {{ printf "%s.filters.http.router.v3.Router" $types | quote }}}
          {{- if $edge.tls.enabled }}
          transport_socket:
            name: envoy.transport_sockets.tls
            typed_config:
              "@type": {{ printf "%s.transport_sockets.tls.v3.DownstreamTlsContext" $types }}
              common_tls_context:
                # h2 first: gRPC clients need HTTP/2; browsers may fall back to HTTP/1.1 grpc-web.
                alpn_protocols: [h2, http/1.1]
                tls_certificates:
                  - certificate_chain: {filename: /etc/envoy/tls/tls.crt}
                    private_key: {filename: /etc/envoy/tls/tls.key}
          {{- end }}
  clusters:
    {{- range $s := $services }}
    - name: {{ $s.name }}
      # Every pod behind the headless Service is an endpoint.
      type: STRICT_DNS
      connect_timeout: 2s
      load_assignment:
        cluster_name: {{ $s.name }}
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    socket_address:
                      address: {{ printf "%s-headless.%s.svc.cluster.local" (include "lastmile.componentName" (dict "root" $ "name" $s.name)) (default "default" $.Release.Namespace) }}
                      port_value: {{ $s.port }}
      # gRPC needs HTTP/2 towards the services; Envoy speaks HTTP/1.1 upstream by default.
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": {{ printf "%s.upstreams.http.v3.HttpProtocolOptions" $types }}
          explicit_http_config: {http2_protocol_options: {}}
      circuit_breakers:
        thresholds:
          - {max_connections: 1000000, max_pending_requests: 1000000, max_requests: 1000000}
      {{- if and $edge.consistentHashHeader (eq $s.name "tracking") }}
      lb_policy: RING_HASH
      {{- end }}
    {{- end }}
{{- end }}
