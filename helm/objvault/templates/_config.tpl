{{/*
objvault.toml rendered from .Values.config, .Values.replication and .Values.alerts. Strings
go through toJson: a JSON string is a valid TOML basic string. Numbers from
values files arrive as float64 and are printed as integers where the loader
wants integers. Secrets are never written here, only the *_file paths of the
Secret mounted at objvault.secretsDir.
*/}}
{{- define "objvault.configToml" -}}
{{- $c := .Values.config -}}
{{- $secrets := include "objvault.secretsDir" . -}}
# Rendered by the objvault Helm chart; edit values.yaml, not this file.
listen = {{ printf "0.0.0.0:%d" (int64 .Values.containerPorts.http) | toJson }}
data_dirs = [{{ include "objvault.dataDir" . | toJson }}]
admin_token_file = {{ printf "%s/admin-token" $secrets | toJson }}
metrics_token_file = {{ printf "%s/metrics-token" $secrets | toJson }}
log_level = {{ $c.logLevel | toJson }}
max_chunk_bytes = {{ int64 $c.maxChunkBytes }}
segment_bytes = {{ int64 $c.segmentBytes }}
stream_threshold_bytes = {{ int64 $c.streamThresholdBytes }}
{{- if .Values.tls.enabled }}
tls_cert_file = {{ printf "%s/tls.crt" (include "objvault.tlsDir" .) | toJson }}
tls_key_file = {{ printf "%s/tls.key" (include "objvault.tlsDir" .) | toJson }}
{{- end }}

[gc]
grace_seconds = {{ int64 $c.gc.graceSeconds }}
interval_seconds = {{ int64 $c.gc.intervalSeconds }}
compact_threshold = {{ float64 $c.gc.compactThreshold }}
compact_rate_bytes_per_second = {{ int64 $c.gc.compactRateBytesPerSecond }}

[scrub]
interval_seconds = {{ int64 $c.scrub.intervalSeconds }}
rate_bytes_per_second = {{ int64 $c.scrub.rateBytesPerSecond }}

[s3]
listen = {{ printf "0.0.0.0:%d" (int64 .Values.containerPorts.s3) | toJson }}
{{- range $t := .Values.replication.targets }}

[[replication.targets]]
name = {{ $t.name | toJson }}
kind = {{ $t.kind | toJson }}
url = {{ $t.url | toJson }}
{{- if $t.endpoint }}
endpoint = {{ $t.endpoint | toJson }}
{{- end }}
{{- if $t.region }}
region = {{ $t.region | toJson }}
{{- end }}
{{- range $key, $secretKey := (include "objvault.targetSecretFiles" (dict "target" $t "context" $) | fromJson) }}
{{ $key }} = {{ printf "%s/%s" $secrets $secretKey | toJson }}
{{- end }}
{{- if hasKey $t "deleteDelaySeconds" }}
delete_delay_seconds = {{ int64 $t.deleteDelaySeconds }}
{{- end }}
{{- if hasKey $t "concurrency" }}
concurrency = {{ int64 $t.concurrency }}
{{- end }}
{{- if hasKey $t "vaults" }}
vaults = {{ $t.vaults | toJson }}
{{- end }}
{{- if hasKey $t "checkpointIntervalSeconds" }}
checkpoint_interval_seconds = {{ int64 $t.checkpointIntervalSeconds }}
{{- end }}
{{- end }}
{{- range $w := .Values.alerts.webhooks }}

[[alerts.webhooks]]
url_file = {{ printf "%s/webhook-%s-url" $secrets $w.name | toJson }}
secret_file = {{ printf "%s/webhook-%s-secret" $secrets $w.name | toJson }}
{{- if hasKey $w "events" }}
events = {{ $w.events | toJson }}
{{- end }}
{{- end }}
{{- end }}
