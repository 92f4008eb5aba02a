{{/* vim: set filetype=mustache: */}}

{{/* Chart name, truncated to 63 characters (DNS label). */}}
{{- define "objvault.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified name: <release>-<chart> unless the release name already
contains the chart name. Truncated to 52 characters so that StatefulSet pod
names with their controller-revision-hash label stay within 63.
*/}}
{{- define "objvault.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "objvault.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "objvault.selectorLabels" -}}
app.kubernetes.io/name: {{ include "objvault.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "objvault.labels" -}}
helm.sh/chart: {{ include "objvault.chart" . }}
{{ include "objvault.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: objvault
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* metadata.annotations block content, or nothing. Call with (dict "extra" MAP "context" $). */}}
{{- define "objvault.annotations" -}}
{{- $all := merge (deepCopy (default dict .extra)) (deepCopy (default dict .context.Values.commonAnnotations)) }}
{{- if $all }}
annotations:
  {{- toYaml $all | nindent 2 }}
{{- end }}
{{- end }}

{{- define "objvault.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "objvault.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "objvault.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Name of the Secret holding the admin and metrics tokens and target credentials. */}}
{{- define "objvault.secretName" -}}
{{- default (include "objvault.fullname" .) .Values.auth.existingSecret }}
{{- end }}

{{- define "objvault.headlessServiceName" -}}
{{- printf "%s-headless" (include "objvault.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "objvault.scheme" -}}
{{- ternary "HTTPS" "HTTP" .Values.tls.enabled }}
{{- end }}

{{/* Where the pod finds its files. */}}
{{- define "objvault.configPath" -}}/etc/objvault/objvault.toml{{- end }}
{{- define "objvault.secretsDir" -}}/etc/objvault/secrets{{- end }}
{{- define "objvault.tlsDir" -}}/etc/objvault/tls{{- end }}
{{- define "objvault.dataDir" -}}/data{{- end }}

{{/*
Which secret files a replication target uses: a dict of config key -> Secret
key. Call with (dict "target" T "context" $). A key is used when the chart's
Secret holds a value for it, or, with auth.existingSecret, whenever the kind
needs it (the existing Secret is expected to hold it).
*/}}
{{- define "objvault.targetSecretFiles" -}}
{{- $t := .target }}
{{- $existing := .context.Values.auth.existingSecret }}
{{- $files := dict }}
{{- if eq $t.kind "s3" }}
{{- if and (not $t.ambientCredentials) (or $existing $t.accessKeyId) }}
{{- $_ := set $files "access_key_id_file" (printf "%s-access-key-id" $t.name) }}
{{- end }}
{{- if and (not $t.ambientCredentials) (or $existing $t.secretAccessKey) }}
{{- $_ := set $files "secret_access_key_file" (printf "%s-secret-access-key" $t.name) }}
{{- end }}
{{- else if eq $t.kind "objvault" }}
{{- if or $existing $t.token }}
{{- $_ := set $files "token_file" (printf "%s-token" $t.name) }}
{{- end }}
{{- end }}
{{- if or $t.encrypt $t.encryptionKey }}
{{- $_ := set $files "encryption_key_file" (printf "%s-encryption-key" $t.name) }}
{{- end }}
{{- toJson $files }}
{{- end }}

{{/* Fail early on replication targets that cannot work. */}}
{{- define "objvault.validateTargets" -}}
{{- $existing := .Values.auth.existingSecret }}
{{- $seen := dict }}
{{- range $i, $t := .Values.replication.targets }}
{{- if hasKey $seen $t.name }}
{{- fail (printf "replication.targets[%d].name: duplicate target %q" $i $t.name) }}
{{- end }}
{{- $_ := set $seen $t.name true }}
{{- if and (eq $t.kind "s3") (not $existing) (not $t.ambientCredentials) (ne (empty $t.accessKeyId) (empty $t.secretAccessKey)) }}
{{- fail (printf "replication.targets[%d] (%s): set accessKeyId and secretAccessKey together" $i $t.name) }}
{{- end }}
{{- if and $t.encrypt (not $existing) (not $t.encryptionKey) }}
{{- fail (printf "replication.targets[%d] (%s): encrypt needs encryptionKey or auth.existingSecret" $i $t.name) }}
{{- end }}
{{- if and (eq $t.kind "local") (not (hasPrefix "file://" $t.url)) }}
{{- fail (printf "replication.targets[%d] (%s): kind local needs a file:// url" $i $t.name) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Input of the checksum/secret annotation: what the Secret is made from, not
the rendered Secret, whose generated tokens differ on every render.
*/}}
{{- define "objvault.secretChecksumInput" -}}
{{- $targets := list }}
{{- range .Values.replication.targets }}
{{- $targets = append $targets (pick . "name" "accessKeyId" "secretAccessKey" "token" "encryptionKey") }}
{{- end }}
{{- $webhooks := list }}
{{- range .Values.alerts.webhooks }}
{{- $webhooks = append $webhooks (pick . "name" "url" "secret") }}
{{- end }}
{{- toJson (dict "existingSecret" .Values.auth.existingSecret "adminToken" .Values.auth.adminToken "metricsToken" .Values.auth.metricsToken "targets" $targets "webhooks" $webhooks "tls" .Values.tls) }}
{{- end }}
