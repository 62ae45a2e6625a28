#!/bin/sh
# alert-mail.sh: an alert_command that mails rtbackup's alert through the local MTA's
# sendmail (Postfix, Exim, msmtp-mta, nullmailer: whichever provides /usr/sbin/sendmail).
# The alert (the run's JSON summary, with "alert" and "text") arrives on stdin and
# becomes the mail's body; the subject comes from the placeholders rtbackup fills in.
#
#   [UCLA.settings]
#   alert_command = "sh /usr/local/share/rtbackup/deploy/alerts/alert-mail.sh ops@clinic.example '{env} {source} {command}: {status} ({reason}) on {host}'"
#
# Usage: alert-mail.sh ADDRESS SUBJECT. $SENDMAIL overrides the sendmail program.
# Exit status: sendmail's (rtbackup logs a failure; the run's own exit code stays).
set -eu
to=${1:?usage: alert-mail.sh ADDRESS SUBJECT}
# One line, whatever the placeholders held: no header can be smuggled in.
subject=$(printf '%s' "${2:-rtbackup alert}" | tr -d '\r\n')
{
    printf 'To: %s\n' "$to"
    printf 'Subject: rtbackup: %s\n' "$subject"
    printf 'Content-Type: text/plain; charset=utf-8\n'
    printf 'Auto-Submitted: auto-generated\n'
    printf '\n'
    cat
    printf '\n'
} | "${SENDMAIL:-/usr/sbin/sendmail}" -oi -- "$to"
