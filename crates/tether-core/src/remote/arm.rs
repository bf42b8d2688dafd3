//! Arming and activating, in one session: take the host's deploy lock,
//! write the trial's state directory, start the guard (`systemd-run`, owned
//! by PID 1), and once it is armed run the new system's
//! `switch-to-configuration` in its own transient unit (so losing SSH or
//! restarting sshd cannot kill it half-way), then take the health checks'
//! first look at the system. One SSH session less on every deploy than
//! arming and activating apart.

use super::checks::{system_state_script, SystemState, SystemStateLook};
use super::guard::{guard_script, lease_bump, GuardSpec, GuardState};
use super::wire::{first, parse_fields, protocol_line, ParseError};
use super::{Op, Operation, ScriptOutput, LOCK_DIR, RESOLVE_FUNCTION, RUN_DIR};
use crate::model::Goal;
use crate::shell::quote;

/// Arms the guard for `spec`, then activates its new system with `goal`.
#[derive(Debug, Clone)]
pub struct ArmAndActivate {
    pub spec: GuardSpec,
    pub goal: Goal,
}

/// The outcome of arming.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArmResult {
    Armed,
    /// Another deploy (this id) holds the lock with a live guard.
    Busy(String),
    /// The host runs another system than the one the guard would return to.
    Changed(String),
    MissingTool(String),
    /// `systemd-run` could not start the guard.
    Failed,
}

/// What the session reported: how arming went and, when armed, how the
/// activation exited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArmReport {
    pub arm: ArmResult,
    /// The activation's exit code (the session's, when armed).
    pub exit_code: Option<i32>,
    /// The activation renewed the lease on its way out.
    pub lease_renewed: bool,
    /// The system state right after the activation: the health checks'
    /// first look, without a session of its own.
    pub first_look: Option<SystemStateLook>,
}

/// A line the session streams, as the deploy should treat it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamLine<'a> {
    /// The guard is armed: the activation starts now.
    Armed,
    /// One of the protocol's own lines.
    Protocol,
    /// The target's output (the activation's messages).
    Output(&'a str),
}

impl ArmAndActivate {
    /// How to treat a line of this session's output as it arrives.
    pub fn classify(line: &str) -> StreamLine<'_> {
        match protocol_line(line) {
            Some(("arm", "armed")) => StreamLine::Armed,
            Some(_) => StreamLine::Protocol,
            None => StreamLine::Output(line),
        }
    }

    /// Takes the host's deploy lock, writes the deploy's state directory and
    /// starts the guard. Prints `arm=armed`, or `arm=busy` with
    /// `busy=<deploy id>` when another deploy's guard is alive, or
    /// `arm=changed` with `current=<system>` when the host no longer runs
    /// the system the guard would return to (it changed since the
    /// preflight: the copy and the build can take minutes). A lock whose
    /// guard is gone (a deployer killed earlier, a reboot) is stale and
    /// taken over.
    fn arm_script(&self) -> String {
        let spec = &self.spec;
        let dir = spec.dir();
        format!(
            r#"set -u
dir={dir}
lockdir={lock}
[ -d {run}/deploys ] || mkdir -p {run}/deploys
# Resolve the guard's tools now, to store paths on NixOS: the guard must keep
# working while /run/current-system changes under it.
paths=
for t in sh flock systemctl sleep readlink date mv cat rm mkdir; do
    p=$(command -v "$t") || {{ echo "arm=missing-tool"; echo "missing=$t"; exit 0; }}
    paths="$paths $p"
done
# One readlink for all (this runs on every deploy; spawns cost CPU).
tool_path=
sh_path=
for p in $(readlink -f $paths); do
    [ -n "$sh_path" ] || sh_path=$p
    d=${{p%/*}}
    case ":$tool_path:" in *":$d:"*) ;; *) tool_path="$tool_path${{tool_path:+:}}$d" ;; esac
done
exec 9>{run}/lock.flock
flock 9
if [ -d "$lockdir" ]; then
    unit=; read -r unit 2>/dev/null <"$lockdir/unit"
    if [ -n "$unit" ] && systemctl is-active --quiet "$unit"; then
        holder=; read -r holder 2>/dev/null <"$lockdir/deploy"
        echo "arm=busy"
        echo "busy=$holder"
        exit 0
    fi
    rm -rf "$lockdir"
fi
{resolve}
resolve /run/current-system
if [ "$r" != {old} ]; then
    echo "arm=changed"
    echo "current=$r"
    exit 0
fi
mkdir "$lockdir" "$dir"
printf '%s\n' {id} >"$lockdir/deploy"
printf '%s\n' {unit} >"$lockdir/unit"
umask 077
{{
    printf 'DEPLOY_ID=%s\n' {id_q}
    printf 'OLD=%s\n' {old_q}
    printf 'NEW=%s\n' {new_q}
    printf 'ACTIVATION_UNIT=%s\n' {act_q}
    printf 'LOCK_DIR=%s\n' {lock_q}
    printf 'LEASE_SECONDS=%s\n' {lease}
    printf 'DEPLOYER=%s\n' {deployer_q}
    printf 'TOOL_PATH=%s\n' "'$tool_path'"
    printf 'SH=%s\n' "'$sh_path'"
}} >"$dir/params"
printf '%s\n' {token} >"$dir/token"
printf '%s\n' {armed} >"$dir/state"
read -r up _ </proc/uptime
echo $(( ${{up%%.*}} + {lease} )) >"$dir/lease"
printf '%s' {guard} >"$dir/guard.sh"
armed=no
if systemd-run --unit={unit} --description={desc} --quiet --collect \
    --setenv=PATH="$tool_path:/usr/bin:/bin" "$sh_path" "$dir/guard.sh" "$dir"; then
    armed=yes
    echo "arm=armed"
else
    rm -rf "$lockdir"
    echo "arm=failed"
fi
# Other deploys may check the lock from now on.
exec 9>&-
"#,
            dir = quote(&dir),
            lock = quote(LOCK_DIR),
            run = quote(RUN_DIR),
            id = quote(spec.deploy_id.as_str()),
            unit = quote(&spec.guard_unit()),
            // The params file is sourced by the guard: quote once for this
            // script and once more for that file.
            id_q = quote(&quote(spec.deploy_id.as_str())),
            old_q = quote(&quote(spec.old_system.as_str())),
            new_q = quote(&quote(spec.new_system.as_str())),
            act_q = quote(&quote(&spec.activation_unit())),
            lock_q = quote(&quote(LOCK_DIR)),
            lease = spec.lease_secs(),
            deployer_q = quote(&quote(&spec.deployer)),
            token = quote(spec.token.as_str()),
            armed = GuardState::Armed.quoted(),
            guard = quote(&guard_script()),
            desc = quote(&format!("tether guard for deploy {}", spec.deploy_id)),
            old = quote(spec.old_system.as_str()),
            resolve = RESOLVE_FUNCTION,
        )
    }

    /// The `systemd-run` that runs the new system's activation (needs `$dir`
    /// and the deploy's params sourced), then the system's state as the
    /// [`SystemState`] operation prints it. Exits with the activation's
    /// exit code.
    fn activation_command(&self) -> String {
        let spec = &self.spec;
        format!(
            r#"systemd-run --unit={unit} --description={desc} --quiet --collect --pipe --wait \
    --service-type=exec --setenv=PATH="$TOOL_PATH:/usr/bin:/bin" \
    "$SH" -c '"$1/bin/switch-to-configuration" "$2"; rc=$?; printf "%s\n" "$rc" >"$3/activation.rc.new"; mv -f "$3/activation.rc.new" "$3/activation.rc"; exit $rc' \
    sh {new} {goal} "$dir" </dev/null
rc=$?
# A successful activation renews the lease on its way out: the lease keeper
# then needs no session of its own for a short trial.
if [ "$rc" = 0 ] && {bump}; then echo "lease_renewed=yes"; fi
{state}exit $rc
"#,
            bump = lease_bump(spec),
            state = system_state_script(),
            unit = quote(&spec.activation_unit()),
            desc = quote(&format!("tether activation for deploy {}", spec.deploy_id)),
            new = quote(spec.new_system.as_str()),
            goal = quote(self.goal.as_str()),
        )
    }
}

impl Operation for ArmAndActivate {
    type Output = ArmReport;
    const OP: Op = Op::ArmAndActivate;

    /// Prints the arm result first (`arm=…`); when armed, the exit code is
    /// the activation's.
    fn script(&self) -> String {
        format!(
            "{}if [ \"$armed\" = yes ]; then\n. \"$dir/params\"\n{}fi\n",
            self.arm_script(),
            self.activation_command()
        )
    }

    fn parse(&self, out: &ScriptOutput) -> Result<ArmReport, ParseError> {
        let f = parse_fields(&out.stdout);
        let arm = match first(&f, "arm") {
            Some("armed") => ArmResult::Armed,
            Some("busy") => {
                ArmResult::Busy(first(&f, "busy").unwrap_or("another deploy").to_string())
            }
            Some("changed") => {
                ArmResult::Changed(first(&f, "current").unwrap_or_default().to_string())
            }
            Some("missing-tool") => {
                ArmResult::MissingTool(first(&f, "missing").unwrap_or("?").to_string())
            }
            Some("failed") => ArmResult::Failed,
            _ => return Err(ParseError("arming the guard printed no result".into())),
        };
        let armed = arm == ArmResult::Armed;
        Ok(ArmReport {
            arm,
            exit_code: out.exit_code.filter(|_| armed),
            lease_renewed: first(&f, "lease_renewed") == Some("yes"),
            first_look: armed.then(|| SystemState.parse(out).ok()).flatten(),
        })
    }
}
