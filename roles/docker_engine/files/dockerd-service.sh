#!/bin/sh
# Start, restart or reload dockerd on a host without systemd (a container, a minimal VM).
#   usage: dockerd-service.sh start|restart|reload PIDFILE LOGFILE TIMEOUT
# Prints "started", "restarted", "reloaded" or "running" (nothing to do); exit 1 with the log's last
# lines when dockerd does not answer within TIMEOUT seconds.
set -eu
action=$1 pidfile=$2 logfile=$3 timeout=$4

answers() { docker info >/dev/null 2>&1; }

daemon_pid() {
  pid=$(cat "$pidfile" 2>/dev/null || :)
  case $pid in '' | *[!0-9]*) return 1 ;; esac
  kill -0 "$pid" 2>/dev/null && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ] && echo "$pid"
}

wait_for() {   # wait_for up|down
  i=0
  while [ "$i" -lt $((timeout * 2)) ]; do
    if [ "$1" = up ]; then answers && return 0; else daemon_pid >/dev/null || return 0; fi
    sleep 0.5; i=$((i + 1))
  done
  return 1
}

start() {
  if command -v cgroupfs-mount >/dev/null 2>&1 && [ ! -d /sys/fs/cgroup/cpu ] && [ ! -f /sys/fs/cgroup/cgroup.controllers ]; then
    cgroupfs-mount >/dev/null 2>&1 || :
  fi
  mkdir -p "$(dirname "$logfile")"
  setsid dockerd --pidfile "$pidfile" >>"$logfile" 2>&1 </dev/null &
  if ! wait_for up; then
    echo "dockerd did not answer within ${timeout}s; last lines of $logfile:" >&2
    tail -n 20 "$logfile" >&2 || :
    exit 1
  fi
}

command -v docker >/dev/null 2>&1 || { echo "the docker client is not installed (docker-cli / docker-ce-cli)" >&2; exit 1; }

case $action in
  start)
    if answers; then echo running; exit 0; fi
    start; echo started ;;
  restart)
    if pid=$(daemon_pid); then
      kill -TERM "$pid"
      wait_for down || { echo "dockerd (pid $pid) did not stop within ${timeout}s" >&2; exit 1; }
    fi
    start; echo restarted ;;
  reload)
    pid=$(daemon_pid) || { echo "no dockerd running with the pid file $pidfile" >&2; exit 1; }
    kill -HUP "$pid"; echo reloaded ;;
  *) echo "usage: $0 start|restart|reload PIDFILE LOGFILE TIMEOUT" >&2; exit 2 ;;
esac
