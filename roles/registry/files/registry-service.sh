#!/bin/sh
# Run the registry without systemd (a container, a minimal VM): docker-registry in the background as
# its system user, with a pid file and a log file.
#   usage: registry-service.sh start|restart|stop PIDFILE LOGFILE CONFIG USER URL TIMEOUT
# Prints "started", "restarted", "stopped" or "running"/"not running" (nothing to do); exits 1 with
# the log's last lines when GET URL does not answer within TIMEOUT seconds.
set -eu
action=$1 pidfile=$2 logfile=$3 config=$4 user=$5 url=$6 timeout=$7
binary=/usr/bin/docker-registry
# Processes are matched by name (/proc/PID/stat), not by --exec: reading /proc/PID/exe of another user's
# process needs CAP_SYS_PTRACE, which root inside a container usually lacks.
name=docker-registry

running() { start-stop-daemon --status --pidfile "$pidfile" --name "$name"; }

answers() {
  python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$url" >/dev/null 2>&1
}

wait_up() {
  i=0
  while [ "$i" -lt $((timeout * 5)) ]; do
    answers && return 0
    running || break
    sleep 0.2; i=$((i + 1))
  done
  echo "the registry did not answer $url within ${timeout}s; last lines of $logfile:" >&2
  tail -n 20 "$logfile" >&2 || :
  exit 1
}

start() {
  mkdir -p "$(dirname "$logfile")"
  touch "$logfile" && chmod 0640 "$logfile"
  start-stop-daemon --start --background --no-close --make-pidfile --pidfile "$pidfile" \
    --chuid "$user" --name "$name" --startas "$binary" -- serve "$config" >>"$logfile" 2>&1 </dev/null
  wait_up
}

stop() {
  start-stop-daemon --stop --retry TERM/10/KILL/5 --remove-pidfile --pidfile "$pidfile" --name "$name" >/dev/null
}

case $action in
  start)
    if running; then wait_up; echo running; exit 0; fi
    start; echo started ;;
  restart)
    if running; then stop; fi
    start; echo restarted ;;
  stop)
    if running; then stop; echo stopped; else echo "not running"; fi ;;
  *) echo "usage: $0 start|restart|stop PIDFILE LOGFILE CONFIG USER URL TIMEOUT" >&2; exit 2 ;;
esac
