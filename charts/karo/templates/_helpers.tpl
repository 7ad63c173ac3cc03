{{/* Chart name, or nameOverride. */}}
{{- define "karo.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the objects: fullnameOverride, else the release name when it
already contains the chart name (`helm install karo` gives `karo`), else
<release>-<name>.
*/}}
{{- define "karo.fullname" -}}
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

{{/* <fullname>-<suffix>, within 63 characters. */}}
{{- define "karo.suffixed" -}}
{{- $ctx := index . 0 }}
{{- $suffix := index . 1 }}
{{- $base := include "karo.fullname" $ctx | trunc (int (sub 62 (len $suffix))) | trimSuffix "-" }}
{{- printf "%s-%s" $base $suffix }}
{{- end }}

{{- define "karo.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select the pods; never change them between upgrades. */}}
{{- define "karo.selectorLabels" -}}
app.kubernetes.io/name: {{ include "karo.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Common labels (each object adds its app.kubernetes.io/component). */}}
{{- define "karo.labels" -}}
helm.sh/chart: {{ include "karo.chart" . }}
{{ include "karo.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: karo
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "karo.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "karo.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "karo.image" -}}
{{- $repo := required "image.repository is required" .Values.image.repository }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repo .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repo (default .Chart.AppVersion .Values.image.tag | toString) }}
{{- end }}
{{- end }}

{{/* "true" when the webhook serves HTTPS: tls.enabled and a secretName. */}}
{{- define "karo.tls" -}}
{{- if and .Values.webhook.tls.enabled .Values.webhook.tls.secretName }}true{{ end }}
{{- end }}

{{/* The value of a literal env entry of .Values.env ("" when absent). */}}
{{- define "karo.envValue" -}}
{{- $ctx := index . 0 }}
{{- $want := index . 1 }}
{{- range $ctx.Values.env }}
{{- if eq (toString .name) $want }}
{{- if not (hasKey . "value") }}
{{- fail (printf "env: %s must be a literal value (the chart needs it to set the container port)" $want) }}
{{- end }}
{{- toString .value }}
{{- end }}
{{- end }}
{{- end }}

{{/* "true" when .Values.env has an entry of that name. */}}
{{- define "karo.hasEnv" -}}
{{- $ctx := index . 0 }}
{{- $want := index . 1 }}
{{- range $ctx.Values.env }}
{{- if eq (toString .name) $want }}true{{ end }}
{{- end }}
{{- end }}

{{/*
The container port of the webhook listener: env WEBHOOK_PORT (which karo
applies over --webhook-address), else webhook.port with TLS, else
service.targetPort.
*/}}
{{- define "karo.webhookPort" -}}
{{- $fromEnv := include "karo.envValue" (list . "WEBHOOK_PORT") }}
{{- if $fromEnv }}
{{- if not (regexMatch "^[0-9]{1,5}$" $fromEnv) }}
{{- fail (printf "env: WEBHOOK_PORT %q is not a port number" $fromEnv) }}
{{- end }}
{{- $p := atoi $fromEnv }}
{{- if or (lt $p 1) (gt $p 65535) }}
{{- fail (printf "env: WEBHOOK_PORT %q: port out of range" $fromEnv) }}
{{- end }}
{{- $p }}
{{- else if include "karo.tls" . }}
{{- int64 .Values.webhook.port }}
{{- else }}
{{- int64 .Values.service.targetPort }}
{{- end }}
{{- end }}

{{/* The Secret holding the webhook credentials ("" with insecureNoAuth). */}}
{{- define "karo.authSecretName" -}}
{{- $a := .Values.webhook.auth }}
{{- if $a.insecureNoAuth }}
{{- else if $a.existingSecret }}
{{- $a.existingSecret }}
{{- else }}
{{- include "karo.suffixed" (list . "webhook-auth") }}
{{- end }}
{{- end }}

{{/*
How the webhook authenticates: insecure, existing (existingSecret), inline
(basicAuth and/or bearerTokens in the chart's Secret) or generated (a random
token in the chart's Secret).
*/}}
{{- define "karo.authMode" -}}
{{- $a := .Values.webhook.auth }}
{{- if $a.insecureNoAuth }}insecure
{{- else if $a.existingSecret }}existing
{{- else if or $a.basicAuth.username $a.bearerTokens }}inline
{{- else }}generated
{{- end }}
{{- end }}

{{/* The keys of the credentials Secret, as a comma-separated list. */}}
{{- define "karo.authKeys" -}}
{{- $a := .Values.webhook.auth }}
{{- $mode := include "karo.authMode" . }}
{{- $keys := list }}
{{- if eq $mode "existing" }}
{{- $keys = $a.existingSecretKeys }}
{{- else if eq $mode "inline" }}
{{- if $a.basicAuth.username }}{{ $keys = append $keys "htpasswd" }}{{ end }}
{{- if $a.bearerTokens }}{{ $keys = append $keys "tokens" }}{{ end }}
{{- else if eq $mode "generated" }}
{{- $keys = list "tokens" }}
{{- end }}
{{- join "," $keys }}
{{- end }}

{{/* Address for a listener: host of bindAddress (loopback when not exposed) and port. */}}
{{- define "karo.address" -}}
{{- $ctx := index . 0 }}
{{- $port := index . 1 }}
{{- $loopback := index . 2 }}
{{- $v6 := eq (toString $ctx.Values.bindAddress) "::" }}
{{- if $loopback }}
{{- printf "%s:%v" (ternary "[::1]" "127.0.0.1" $v6) $port }}
{{- else }}
{{- printf "%s:%v" (ternary "[::]" "0.0.0.0" $v6) $port }}
{{- end }}
{{- end }}

{{/*
Checks of combinations the schema cannot express; included by the
Deployment, so every render runs them.
*/}}
{{- define "karo.validate" -}}
{{- $v := .Values }}
{{- $a := $v.webhook.auth }}
{{- $hasInline := or $a.basicAuth.username $a.basicAuth.password $a.bearerTokens }}
{{- if and $v.ingress.enabled $a.insecureNoAuth }}
{{- fail "ingress.enabled with webhook.auth.insecureNoAuth would publish a webhook that runs Jobs for anyone: configure webhook.auth (basicAuth, bearerTokens or existingSecret) or disable the Ingress" }}
{{- end }}
{{- if and $a.insecureNoAuth (has (toString $v.service.type) (list "NodePort" "LoadBalancer")) }}
{{- fail (printf "service.type %s with webhook.auth.insecureNoAuth would expose an unauthenticated webhook outside the cluster: use ClusterIP or configure webhook.auth" $v.service.type) }}
{{- end }}
{{- if and $v.ingress.enabled (not $v.webhook.enabled) }}
{{- fail "ingress.enabled needs webhook.enabled (the Ingress routes to the webhook Service)" }}
{{- end }}
{{- if and $a.insecureNoAuth (or $hasInline $a.existingSecret) }}
{{- fail "webhook.auth.insecureNoAuth contradicts the credentials given in webhook.auth: remove one or the other" }}
{{- end }}
{{- if and $a.existingSecret $hasInline }}
{{- fail "webhook.auth.existingSecret and webhook.auth.basicAuth/bearerTokens are exclusive: put every credential in the existing Secret, or let the chart make it" }}
{{- end }}
{{- if ne (empty $a.basicAuth.username) (empty $a.basicAuth.password) }}
{{- fail "webhook.auth.basicAuth needs both username and password" }}
{{- end }}
{{- $port := include "karo.webhookPort" . | int64 }}
{{- if eq $port (int64 $v.health.port) }}
{{- fail (printf "the webhook listener and health.port are both %d: give them different ports" $port) }}
{{- end }}
{{- if and $v.monitoring.serviceMonitor.enabled (not $v.monitoring.enabled) }}
{{- fail "monitoring.serviceMonitor.enabled needs monitoring.enabled (the ServiceMonitor scrapes the metrics Service it creates)" }}
{{- end }}
{{- if and $v.networkPolicy.enabled $v.webhook.enabled (not $v.networkPolicy.webhookFrom) }}
{{- fail "networkPolicy.enabled needs networkPolicy.webhookFrom: the peers (e.g. Alertmanager's pods) allowed to post alerts" }}
{{- end }}
{{- if and (gt (int64 $v.replicaCount) 1) (not $v.leaderElection.enabled) }}
{{- fail "replicaCount > 1 needs leaderElection.enabled: without it every replica runs the controller" }}
{{- end }}
{{- $ownedEnv := dict
  "KARO_WEBHOOK_ADDRESS" "service.targetPort, webhook.port, bindAddress or env WEBHOOK_PORT"
  "KARO_WEBHOOK_PATH" "webhook.path"
  "KARO_WEBHOOK_TLS_CERT_FILE" "webhook.tls.secretName"
  "KARO_WEBHOOK_TLS_KEY_FILE" "webhook.tls.secretName"
  "KARO_WEBHOOK_TOKEN_FILE" "webhook.auth"
  "KARO_WEBHOOK_BASIC_AUTH_FILE" "webhook.auth"
  "KARO_INSECURE_NO_AUTH" "webhook.auth.insecureNoAuth"
  "KARO_HEALTH_ADDRESS" "health.port"
  "KARO_LEADER_ELECT" "leaderElection.enabled"
  "KARO_LEADER_ELECTION_NAMESPACE" "the release namespace (it holds the Lease's Role)"
  "KARO_LEADER_ELECTION_ID" "leaderElection.id"
  "POD_NAME" "the chart (downward API)"
  "POD_NAMESPACE" "the chart (downward API)"
}}
{{- $seen := dict }}
{{- range $v.env }}
{{- $n := toString .name }}
{{- if hasKey $ownedEnv $n }}
{{- fail (printf "env: %s is set by the chart; use %s" $n (get $ownedEnv $n)) }}
{{- end }}
{{- if hasKey $seen $n }}
{{- fail (printf "env: %s is given twice" $n) }}
{{- end }}
{{- $_ := set $seen $n true }}
{{- end }}
{{- $ownedFlags := dict
  "--webhook-address" "service.targetPort, webhook.port or bindAddress (they also set the container port and the Service)"
  "--webhook-path" "webhook.path (it also sets the Ingress path)"
  "--webhook-tls-cert-file" "webhook.tls.secretName (the chart mounts the Secret)"
  "--webhook-tls-key-file" "webhook.tls.secretName (the chart mounts the Secret)"
  "--webhook-token-file" "webhook.auth (the chart mounts the Secret)"
  "--webhook-basic-auth-file" "webhook.auth (the chart mounts the Secret)"
  "--insecure-no-auth" "webhook.auth.insecureNoAuth"
  "--health-address" "health.port (it also sets the probes and the metrics Service)"
  "--leader-elect" "leaderElection.enabled (it also decides the Lease Role)"
  "--leader-election-namespace" "nothing: the Lease lives in the release namespace, where its Role is"
  "--leader-election-id" "leaderElection.id (it also names the Lease in the Role)"
}}
{{- range $v.extraArgs }}
{{- $flag := regexReplaceAll "=.*$" (toString .) "" }}
{{- if hasKey $ownedFlags $flag }}
{{- fail (printf "extraArgs: set %s with %s" $flag (get $ownedFlags $flag)) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
karo's arguments, as a YAML list. A flag in extraArgs replaces the chart's
--log-level/--log-format; an env LOG_LEVEL / KARO_LOG_FORMAT also does (a
flag would win over it).
*/}}
{{- define "karo.args" -}}
{{- $v := .Values }}
{{- $args := list }}
{{- $port := include "karo.webhookPort" . }}
{{- $args = append $args (printf "--webhook-address=%s" (include "karo.address" (list . $port (not $v.webhook.enabled)))) }}
{{- $args = append $args (printf "--webhook-path=%s" $v.webhook.path) }}
{{- if include "karo.tls" . }}
{{- $args = append $args "--webhook-tls-cert-file=/etc/karo/tls/tls.crt" }}
{{- $args = append $args "--webhook-tls-key-file=/etc/karo/tls/tls.key" }}
{{- end }}
{{- $keys := include "karo.authKeys" . | splitList "," }}
{{- if eq (include "karo.authMode" .) "insecure" }}
{{- $args = append $args "--insecure-no-auth" }}
{{- else }}
{{- if has "tokens" $keys }}
{{- $args = append $args "--webhook-token-file=/etc/karo/auth/tokens" }}
{{- end }}
{{- if has "htpasswd" $keys }}
{{- $args = append $args "--webhook-basic-auth-file=/etc/karo/auth/htpasswd" }}
{{- end }}
{{- end }}
{{- $args = append $args (printf "--health-address=%s" (include "karo.address" (list . (int64 $v.health.port) false))) }}
{{- if $v.leaderElection.enabled }}
{{- $args = append $args "--leader-elect=true" }}
{{- $args = append $args (printf "--leader-election-namespace=%s" .Release.Namespace) }}
{{- $args = append $args (printf "--leader-election-id=%s" $v.leaderElection.id) }}
{{- else }}
{{- $args = append $args "--leader-elect=false" }}
{{- end }}
{{- $overridden := dict }}
{{- range $v.extraArgs }}
{{- $_ := set $overridden (regexReplaceAll "=.*$" (toString .) "") true }}
{{- end }}
{{- if not (or (hasKey $overridden "--log-level") (include "karo.hasEnv" (list . "LOG_LEVEL"))) }}
{{- $args = append $args (printf "--log-level=%s" $v.logLevel) }}
{{- end }}
{{- if not (or (hasKey $overridden "--log-format") (include "karo.hasEnv" (list . "KARO_LOG_FORMAT"))) }}
{{- $args = append $args (printf "--log-format=%s" $v.logFormat) }}
{{- end }}
{{- range $v.extraArgs }}
{{- $args = append $args (toString .) }}
{{- end }}
{{- toYaml $args }}
{{- end }}
