//! Telemetry values of a GPU at a point in time: the YAML's base plus a
//! deterministic periodic swing, unless `nvml-simctl set` pinned a value,
//! plus what the GPU's simulated processes use.
//!
//! The swing is a sine of wall-clock time, so every process sampling at the
//! same moment sees the same value, and different metrics and GPUs have
//! different phases so they do not move in lockstep.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::config::{GpuConfig, Wave};
use crate::process;
use crate::state::{GpuState, Overrides};

/// One reading of a GPU's telemetry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Sample {
    /// Memory used by processes, bytes (excludes the driver's reserve).
    pub memory_used: u64,
    /// GPU utilisation, percent.
    pub gpu_util: u32,
    /// Memory utilisation, percent.
    pub memory_util: u32,
    /// Temperature, °C.
    pub temperature_c: u32,
    /// Power draw, milliwatts.
    pub power_mw: u32,
    /// Fan speed, percent (0 on boards without fans).
    pub fan_percent: u32,
}

fn seconds(now: SystemTime) -> f64 {
    now.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn wave_value(wave: Wave<f64>, period_s: f64, t: f64, phase: f64) -> f64 {
    let (base, swing) = wave.parts(0.0);
    base + swing * (std::f64::consts::TAU * t / period_s + phase).sin()
}

/// Samples the telemetry of `gpu` at `now`.
pub fn sample(gpu: &GpuConfig, overrides: &Overrides, now: SystemTime) -> Sample {
    let spec = &gpu.telemetry;
    let t = seconds(now);
    let phase = |metric: f64| f64::from(gpu.index) * 0.9 + metric * 1.7;
    let at = |wave: Wave<f64>, metric: f64| wave_value(wave, spec.period_s, t, phase(metric));
    let percent = |v: f64| v.round().clamp(0.0, 100.0) as u32;

    let card = &gpu.card;
    let usable = card.memory.total.bytes() - card.memory.reserved.bytes();
    let memory_wave = match spec.memory_used {
        Wave::Fixed(v) => Wave::Fixed(v.bytes() as f64),
        Wave::Varying { base, swing } => Wave::Varying {
            base: base.bytes() as f64,
            swing: swing.bytes() as f64,
        },
    };
    let memory_used = overrides
        .memory_used
        .unwrap_or_else(|| at(memory_wave, 0.0).round().max(0.0) as u64)
        .min(usable);
    let max_power_mw = card.power.max_limit_w.saturating_mul(1000);
    Sample {
        memory_used,
        gpu_util: overrides
            .gpu_util
            .unwrap_or_else(|| percent(at(spec.gpu_util, 1.0)))
            .min(100),
        memory_util: overrides
            .memory_util
            .unwrap_or_else(|| percent(at(spec.memory_util, 2.0)))
            .min(100),
        temperature_c: overrides
            .temperature_c
            .unwrap_or_else(|| at(spec.temperature_c, 3.0).round().max(0.0) as u32),
        power_mw: overrides
            .power_mw
            .unwrap_or_else(|| (at(spec.power_w, 4.0) * 1000.0).round().max(0.0) as u32)
            .min(max_power_mw),
        fan_percent: if card.fans == 0 {
            0
        } else {
            overrides
                .fan_percent
                .unwrap_or_else(|| percent(at(spec.fan_percent, 5.0)))
                .min(100)
        },
    }
}

/// Samples a GPU at `now`: the baseline of [`sample`] (memory and work
/// that no listed process accounts for: the driver's contexts, a display)
/// plus the memory and SM utilisation of its processes, capped at the
/// usable memory and 100 %.
pub fn sample_state(gpu: &GpuConfig, state: &GpuState, now: SystemTime) -> Sample {
    let mut s = sample(gpu, &state.overrides, now);
    let card = &gpu.card;
    let usable = card.memory.total.bytes() - card.memory.reserved.bytes();
    s.memory_used = s
        .memory_used
        .saturating_add(process::process_memory(state, None))
        .min(usable);
    s.gpu_util = s
        .gpu_util
        .saturating_add(process::process_util(state))
        .min(100);
    s
}

/// Current clock in MHz for a clock whose maximum is `max_mhz`: idle at a
/// fifth of the maximum, rising linearly with utilisation.
pub fn current_clock(max_mhz: u32, gpu_util: u32) -> u32 {
    let fraction = 0.2 + 0.8 * f64::from(gpu_util.min(100)) / 100.0;
    (f64::from(max_mhz) * fraction).round() as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{SimConfig, TelemetrySpec};
    use crate::units::{ByteSize, GIB};
    use std::time::Duration;

    fn gpu_with(telemetry: TelemetrySpec) -> GpuConfig {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../config/mainpc/gpus.sim.yaml");
        let mut gpu = SimConfig::load(&root)
            .expect("shipped config loads")
            .gpus
            .remove(0);
        gpu.telemetry = telemetry;
        gpu
    }

    #[test]
    fn fixed_values_do_not_move_and_swings_stay_in_range() {
        let gpu = gpu_with(TelemetrySpec {
            period_s: 10.0,
            memory_used: Wave::Varying {
                base: ByteSize(4 * GIB),
                swing: ByteSize(GIB),
            },
            gpu_util: Wave::Varying {
                base: 50.0,
                swing: 30.0,
            },
            memory_util: Wave::Fixed(20.0),
            temperature_c: Wave::Fixed(61.0),
            power_w: Wave::Varying {
                base: 200.0,
                swing: 50.0,
            },
            fan_percent: Wave::Fixed(44.0),
        });
        let mut seen_util = std::collections::BTreeSet::new();
        for step in 0..40 {
            let now = UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + step * 250);
            let s = sample(&gpu, &Overrides::default(), now);
            assert!((3 * GIB..=5 * GIB).contains(&s.memory_used), "{s:?}");
            assert!((20..=80).contains(&s.gpu_util), "{s:?}");
            assert!((150_000..=250_000).contains(&s.power_mw), "{s:?}");
            assert_eq!(
                (s.memory_util, s.temperature_c, s.fan_percent),
                (20, 61, 44)
            );
            seen_util.insert(s.gpu_util);
        }
        assert!(
            seen_util.len() > 5,
            "the swing must actually vary: {seen_util:?}"
        );
    }

    #[test]
    fn overrides_win_and_are_clamped() {
        let gpu = gpu_with(TelemetrySpec::default());
        let overrides = Overrides {
            memory_used: Some(u64::MAX),
            gpu_util: Some(250),
            temperature_c: Some(90),
            power_mw: Some(123_000),
            ..Overrides::default()
        };
        let s = sample(&gpu, &overrides, SystemTime::now());
        let card = &gpu.card;
        assert_eq!(
            s.memory_used,
            card.memory.total.bytes() - card.memory.reserved.bytes()
        );
        assert_eq!(
            (s.gpu_util, s.temperature_c, s.power_mw),
            (100, 90, 123_000)
        );
    }

    #[test]
    fn clocks_scale_with_utilisation() {
        assert_eq!(current_clock(2000, 0), 400);
        assert_eq!(current_clock(2000, 100), 2000);
        assert_eq!(current_clock(2000, 50), 1200);
    }
}
