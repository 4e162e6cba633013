# Group and agent names for orchestratorctl's bash completion, asked of the
# running daemon (`orchestratorctl -o json groups`). scripts/install.sh
# appends this to the script `orchestratorctl completion bash` generates:
# names where a verb takes a group (`group start|stop|restart`, `agents
# --group`, `slo`) or an agent (`agent restart`, `logs`, `--agent` of
# `plan --all-hosts` and `events`: GROUP/AGENT), the generated completion
# everywhere else. No daemon, no names.

# Completes a name at the cursor; fails when the cursor is not at one.
_orchestratorctl_names() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD - 1]}
    local i word kind="" socket=() words=()
    for ((i = 1; i < COMP_CWORD; i++)); do
        word=${COMP_WORDS[i]}
        case $word in
            --socket)
                socket=(--socket "${COMP_WORDS[i + 1]}")
                ((i++))
                ;;
            -o | --output | --color | --config | --timeout | --group | --agent | --tail | --replica) ((i++)) ;;
            -*) ;;
            *) words+=("$word") ;;
        esac
    done
    case "${words[*]}" in
        "group start" | "group stop" | "group restart") kind=group ;;
        "agent restart" | logs) kind=agent ;;
        slo) kind=group ;;
    esac
    if [[ $prev == --group ]]; then kind=group; fi
    if [[ $prev == --agent ]]; then kind=agent; fi
    [[ -n $kind && $cur != -* ]] || return 1
    local names
    names=$(orchestratorctl "${socket[@]}" -o json groups 2>/dev/null | python3 -c '
import json, sys
try:
    groups = json.load(sys.stdin)
except ValueError:
    sys.exit(0)
for g in groups:
    if sys.argv[1] == "group":
        print(g["name"])
    else:
        for a in g.get("agents", []):
            print(g["name"] + "/" + a)
' "$kind" 2>/dev/null)
    mapfile -t COMPREPLY < <(compgen -W "$names" -- "$cur")
    return 0
}

_orchestratorctl_with_names() {
    _orchestratorctl_names && return 0
    _orchestratorctl "$@"
}
complete -F _orchestratorctl_with_names -o bashdefault -o default orchestratorctl
