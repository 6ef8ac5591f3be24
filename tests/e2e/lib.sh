# Shared by the e2e scripts (sourced): checks of the running embedded stack.

# The containers of compose project $1 that are neither running (healthy, or without a healthcheck)
# nor exited 0 (a one-off such as postgres-init): one line each, nothing when all are fine.
unhealthy_containers() {
  docker ps -a --filter "label=com.docker.compose.project=$1" --format '{{.Names}}' | while read -r c; do
    docker inspect --format '{{.Name}} {{.State.Status}} {{.State.ExitCode}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}} {{ index .Config.Labels "com.docker.compose.oneoff" }}' "$c"
  done | awk '!(($2 == "running" && ($4 == "healthy" || $4 == "none")) || ($2 == "exited" && $3 == 0))'
}
