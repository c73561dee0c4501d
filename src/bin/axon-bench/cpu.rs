//! Where the machine's CPU time went while a workload was measured: the server's process,
//! PostgreSQL's processes, this load generator, and the whole machine, read from /proc (Linux).
//! With everything on one machine, this says whether a workload is bound by CPU, and by whose;
//! per message it is the cost a faster server would have to cut.

use std::time::Instant;

use crate::Figures;

/// `/proc` counts CPU time in USER_HZ ticks, which Linux fixes at 100 a second for user space.
const TICK_MS: f64 = 10.0;

pub struct CpuMeter {
    server_pid: Option<u32>,
    start: Option<Sample>,
}

struct Sample {
    at: Instant,
    machine: u64,
    server: u64,
    postgres: u64,
    generator: u64,
}

impl CpuMeter {
    /// Takes the first reading; none is taken where /proc cannot be read.
    pub fn start(server_pid: Option<u32>) -> Self {
        Self { server_pid, start: sample(server_pid) }
    }

    /// Adds the CPU time spent since `start`, per one of `units` (messages or deliveries), and how
    /// busy the machine's cores were.
    pub fn finish(self, figures: &mut Figures, units: usize, unit: &'static str) {
        let (Some(start), Some(end)) = (self.start, sample(self.server_pid)) else { return };
        if units == 0 {
            return;
        }
        let per_unit = |from: u64, to: u64| to.saturating_sub(from) as f64 * TICK_MS / units as f64;
        figures.add(&format!("cpu_machine_per_{unit}"), per_unit(start.machine, end.machine), "ms");
        if self.server_pid.is_some() {
            figures.add(&format!("cpu_server_per_{unit}"), per_unit(start.server, end.server), "ms");
        }
        figures.add(&format!("cpu_postgres_per_{unit}"), per_unit(start.postgres, end.postgres), "ms");
        figures.add(&format!("cpu_generator_per_{unit}"), per_unit(start.generator, end.generator), "ms");
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let wall_ms = end.at.duration_since(start.at).as_secs_f64() * 1000.0;
        if wall_ms > 0.0 {
            let busy = end.machine.saturating_sub(start.machine) as f64 * TICK_MS / (wall_ms * cores) * 100.0;
            figures.add("cpu_machine_busy", busy, "%");
        }
    }
}

fn sample(server_pid: Option<u32>) -> Option<Sample> {
    let at = Instant::now();
    let machine = machine_busy_ticks()?;
    let generator = process_ticks(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
    let server = match server_pid {
        Some(pid) => process_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?,
        None => 0,
    };
    let mut postgres = 0;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let is_pid = entry.file_name().to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()));
        if !is_pid {
            continue;
        }
        // A process may end between listing and reading: it is skipped.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        if command(&stat) == Some("postgres") {
            postgres += process_ticks(&stat).unwrap_or(0);
        }
    }
    Some(Sample { at, machine, server, postgres, generator })
}

/// The command name in a `/proc/<pid>/stat` line: between the first `(` and the last `)`.
fn command(stat: &str) -> Option<&str> {
    stat.get(stat.find('(')? + 1..stat.rfind(')')?)
}

/// User plus system time of a process (fields 14 and 15 of `/proc/<pid>/stat`, `proc(5)`).
fn process_ticks(stat: &str) -> Option<u64> {
    let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().skip(11);
    Some(fields.next()?.parse::<u64>().ok()? + fields.next()?.parse::<u64>().ok()?)
}

/// The machine's busy time: the first line of `/proc/stat` without idle and iowait. The kernel
/// samples it at clock ticks, while a process's time is its exact run time: on a mostly idle
/// machine short bursts between ticks go uncounted, and the machine can show less than its processes.
fn machine_busy_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<u64> = stat.lines().next()?.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal
    Some(ticks.iter().take(8).enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, t)| t).sum())
}

#[cfg(test)]
mod tests {
    use super::{command, process_ticks};

    #[test]
    fn reads_a_stat_line_whose_command_has_spaces_and_parentheses() {
        let stat = "4242 (tokio (rt) 1) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 1000 0 0";
        assert_eq!(command(stat), Some("tokio (rt) 1"));
        assert_eq!(process_ticks(stat), Some(325));
    }
}
