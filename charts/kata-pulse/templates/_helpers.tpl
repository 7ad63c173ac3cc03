{{/* Chart name, or nameOverride. */}}
{{- define "kata-pulse.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the objects: fullnameOverride, else the release name when it
already contains the chart name, else <release>-<name>.
*/}}
{{- define "kata-pulse.fullname" -}}
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

{{- define "kata-pulse.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select the pods; never change them between upgrades. */}}
{{- define "kata-pulse.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kata-pulse.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "kata-pulse.labels" -}}
helm.sh/chart: {{ include "kata-pulse.chart" . }}
{{ include "kata-pulse.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: node-agent
app.kubernetes.io/part-of: kata-pulse
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "kata-pulse.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kata-pulse.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "kata-pulse.image" -}}
{{- $repo := required "image.repository is required" .Values.image.repository }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repo .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repo (default .Chart.AppVersion .Values.image.tag | toString) }}
{{- end }}
{{- end }}

{{/*
The port of config.listenAddress, after checking the address: an IP literal
and a port (the agent takes no host name), and not a loopback address, which
neither the kubelet's probes nor Prometheus could reach.
*/}}
{{- define "kata-pulse.port" -}}
{{- $addr := toString .Values.config.listenAddress }}
{{- if not (regexMatch "^(([0-9]{1,3}[.]){3}[0-9]{1,3}|\\[[0-9A-Fa-f:.]+\\]):[0-9]{1,5}$" $addr) }}
{{- fail (printf "config.listenAddress %q must be IP:PORT, e.g. 0.0.0.0:8090 or [::]:8090" $addr) }}
{{- end }}
{{- $host := regexReplaceAll ":[0-9]+$" $addr "" }}
{{- if or (hasPrefix "127." $host) (eq $host "[::1]") }}
{{- fail (printf "config.listenAddress %q is a loopback address: the kubelet's probes and Prometheus reach the pod on its IP; use 0.0.0.0:PORT" $addr) }}
{{- end }}
{{- $port := regexFind "[0-9]+$" $addr | atoi }}
{{- if or (lt $port 1) (gt $port 65535) }}
{{- fail (printf "config.listenAddress %q: port out of range" $addr) }}
{{- end }}
{{- $port }}
{{- end }}

{{/*
Host path of the CRI socket ("" for a tcp:// endpoint, which needs no mount).
*/}}
{{- define "kata-pulse.criSocket" -}}
{{- $ep := toString .Values.config.runtimeEndpoint }}
{{- if hasPrefix "tcp://" $ep }}
{{- else }}
{{- $path := trimPrefix "unix://" $ep }}
{{- if not (hasPrefix "/" $path) }}
{{- fail (printf "config.runtimeEndpoint %q must be an absolute socket path, unix:///path or tcp://IP:PORT" $ep) }}
{{- end }}
{{- $path }}
{{- end }}
{{- end }}

{{/* The --sandbox-dirs value, after checking the list. */}}
{{- define "kata-pulse.sandboxDirs" -}}
{{- $seen := dict }}
{{- $items := list }}
{{- range $i, $d := .Values.config.sandboxDirs }}
{{- if hasKey $seen $d.path }}
{{- fail (printf "config.sandboxDirs lists %q twice" $d.path) }}
{{- end }}
{{- $_ := set $seen $d.path true }}
{{- if $d.runtime }}
{{- $items = append $items (printf "%s=%s" $d.runtime $d.path) }}
{{- else }}
{{- $items = append $items $d.path }}
{{- end }}
{{- end }}
{{- if not $items }}
{{- fail "config.sandboxDirs needs at least one folder" }}
{{- end }}
{{- join "," $items }}
{{- end }}

{{/*
The agent's command-line arguments, as a YAML list: one per config value,
then extraArgs. A flag given in extraArgs replaces the chart's (the agent
refuses a flag given twice); short and kata-monitor spellings count too.
The flags that decide ports and mounts can only be set through config.
*/}}
{{- define "kata-pulse.args" -}}
{{- $c := .Values.config }}
{{- $args := list
  (printf "--listen-address=%s" (toString $c.listenAddress))
  (printf "--runtime-endpoint=%s" (toString $c.runtimeEndpoint))
  (printf "--metrics-interval-secs=%d" (int64 $c.metricsIntervalSecs))
  (printf "--log-level=%s" (toString $c.logLevel))
  (printf "--log-format=%s" (toString $c.logFormat))
  (printf "--sandbox-dirs=%s" (include "kata-pulse.sandboxDirs" .))
  (printf "--shim-timeout=%s" (toString $c.shimTimeout))
  (printf "--cri-timeout=%s" (toString $c.criTimeout))
  (printf "--cri-unhealthy-after=%s" (toString $c.criUnhealthyAfter))
  (printf "--max-shim-body-bytes=%d" (int64 $c.maxShimBodyBytes))
  (printf "--shim-concurrency=%d" (int64 $c.shimConcurrency))
  (printf "--kata-metrics=%t" $c.kataMetrics)
  (printf "--cadvisor-metrics=%t" $c.cadvisorMetrics)
  (printf "--shutdown-grace-period=%s" (toString $c.shutdownGracePeriod))
  (printf "--container-stats=%s" (toString $c.containerStats))
}}
{{- if $c.probeListenAddress }}
{{- $args = append $args (printf "--probe-listen-address=%s" (toString $c.probeListenAddress)) }}
{{- end }}
{{- if .Values.webConfig.secretName }}
{{- $args = append $args (printf "--web.config.file=%s/web-config.yml" (include "kata-pulse.webConfigDir" .)) }}
{{- end }}
{{- if $c.enableDebugProxy }}
{{- $args = append $args "--enable-debug-proxy" }}
{{- end }}
{{- $short := dict "-l" "--listen-address" "-r" "--runtime-endpoint" "-m" "--metrics-interval-secs" }}
{{- $overridden := dict }}
{{- range .Values.extraArgs }}
{{- $flag := regexReplaceAll "=.*$" (toString .) "" }}
{{- if hasKey $short $flag }}
{{- $flag = get $short $flag }}
{{- else if and (hasPrefix "-" $flag) (not (hasPrefix "--" $flag)) }}
{{- $flag = printf "-%s" $flag }}
{{- end }}
{{- $owned := dict "--listen-address" "config.listenAddress (it also sets the container port and the probes)" "--probe-listen-address" "config.probeListenAddress (it also sets the probes' port)" "--web.config.file" "webConfig.secretName (it also mounts the Secret)" "--runtime-endpoint" "config.runtimeEndpoint (it also decides which socket is mounted)" "--sandbox-dirs" "config.sandboxDirs (it also decides which folders are mounted)" }}
{{- if hasKey $owned $flag }}
{{- fail (printf "extraArgs: set %s with %s" $flag (get $owned $flag)) }}
{{- end }}
{{- $_ := set $overridden $flag true }}
{{- end }}
{{- $out := list }}
{{- range $args }}
{{- if not (hasKey $overridden (regexReplaceAll "=.*$" . "")) }}
{{- $out = append $out . }}
{{- end }}
{{- end }}
{{- range .Values.extraArgs }}
{{- $out = append $out (toString .) }}
{{- end }}
{{- toYaml $out }}
{{- end }}

{{/*
The port of config.probeListenAddress ("" when unset), checked as the
listen address is, and not the metrics port.
*/}}
{{- define "kata-pulse.probePort" -}}
{{- $addr := toString .Values.config.probeListenAddress }}
{{- if $addr }}
{{- $host := regexReplaceAll ":[0-9]+$" $addr "" }}
{{- if or (hasPrefix "127." $host) (eq $host "[::1]") }}
{{- fail (printf "config.probeListenAddress %q is a loopback address: the kubelet's probes reach the pod on its IP" $addr) }}
{{- end }}
{{- $port := regexFind "[0-9]+$" $addr | atoi }}
{{- if or (lt $port 1) (gt $port 65535) (eq $port (include "kata-pulse.port" . | atoi)) }}
{{- fail (printf "config.probeListenAddress %q: the port must be in range and differ from the metrics port" $addr) }}
{{- end }}
{{- $port }}
{{- end }}
{{- end }}

{{/* Where the webConfig Secret is mounted. */}}
{{- define "kata-pulse.webConfigDir" -}}
/etc/kata-pulse/web
{{- end }}

{{/* The job label a PodMonitor/ServiceMonitor with this jobLabel produces, for NOTES. */}}
{{- define "kata-pulse.jobOf" -}}
{{- $jobLabel := index . 0 }}
{{- $ctx := index . 1 }}
{{- $monitorNs := index . 2 }}
{{- if not $jobLabel }}
{{- printf "job=\"%s/%s\"" $monitorNs (include "kata-pulse.fullname" $ctx) }}
{{- else if eq $jobLabel "app.kubernetes.io/name" }}
{{- printf "job=\"%s\"" (include "kata-pulse.name" $ctx) }}
{{- else }}
{{- printf "job=<value of the label %s>" $jobLabel }}
{{- end }}
{{- end }}
