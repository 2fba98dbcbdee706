//! The agent runs in a process group of its own; [`ProcessGroup`] kills that whole group (the CLI
//! and whatever it started) with SIGKILL when the turn ends or its future is dropped.

use rustix::io::Errno;
use rustix::process::{kill_process_group, Pid, Signal};
use tracing::{debug, warn};

/// Kills a process group once: on [`ProcessGroup::kill`] or, failing that, on drop.
pub(super) struct ProcessGroup {
    /// The group id, equal to the leader's pid (spawned with `process_group(0)`); `None` once
    /// the group has been killed, so a reused id is never signalled twice.
    id: Option<Pid>,
}

impl ProcessGroup {
    /// The group led by the process with this pid; `None` (nothing to kill) for an unknown pid.
    pub(super) fn led_by(leader_pid: Option<u32>) -> ProcessGroup {
        let id = leader_pid
            .and_then(|pid| i32::try_from(pid).ok())
            .and_then(Pid::from_raw);
        ProcessGroup { id }
    }

    /// Sends SIGKILL to every process of the group; a group already gone is not an error.
    pub(super) fn kill(&mut self) {
        let Some(id) = self.id.take() else { return };
        match kill_process_group(id, Signal::KILL) {
            Ok(()) => debug!(
                group = id.as_raw_nonzero().get(),
                "killed the agent's process group"
            ),
            Err(Errno::SRCH) => {}
            Err(err) => {
                warn!(group = id.as_raw_nonzero().get(), cause = %err, "cannot kill the agent's process group")
            }
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}
