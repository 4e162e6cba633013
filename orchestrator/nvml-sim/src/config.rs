//! The simulator's YAML files: card descriptions (model facts shared by every
//! board of that model) and host descriptions (which boards a host has, with
//! per-board identity, initial modes and telemetry).
//!
//! Loading is strict: unknown keys are errors, every error names the file, and
//! YAML syntax errors carry line and column. A loaded [`SimConfig`] is fully
//! validated, so the rest of the crate can index into it without checks.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize};

use crate::units::{ByteSize, MIB};

/// Highest GPU-instance profile index NVML defines plus one
/// (`NVML_GPU_INSTANCE_PROFILE_COUNT` in the nvml.h of the R580 drivers).
pub const GPU_INSTANCE_PROFILE_INDEX_COUNT: u32 = 18;
/// Highest compute-instance profile index NVML defines plus one.
pub const COMPUTE_INSTANCE_PROFILE_INDEX_COUNT: u32 = 9;

/// A configuration problem, always naming the file it is in.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// File that failed.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The YAML did not parse or did not match the schema.
    #[error("{path}: {message}")]
    Parse {
        /// File that failed.
        path: PathBuf,
        /// Parser message, with line and column.
        message: String,
    },
    /// The file parsed but its content is inconsistent.
    #[error("{path}: {message}")]
    Invalid {
        /// File that failed.
        path: PathBuf,
        /// What is wrong and how to fix it.
        message: String,
    },
}

/// GPU architecture, as `nvmlDeviceGetArchitecture` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    /// Kepler.
    Kepler,
    /// Maxwell.
    Maxwell,
    /// Pascal.
    Pascal,
    /// Volta.
    Volta,
    /// Turing.
    Turing,
    /// Ampere (A100, A30, RTX 30xx).
    Ampere,
    /// Ada Lovelace (RTX 40xx, L4, L40S).
    Ada,
    /// Hopper (H100, H200).
    Hopper,
    /// Blackwell (B200, RTX 50xx).
    Blackwell,
}

impl Architecture {
    /// The `NVML_DEVICE_ARCH_*` value.
    pub fn nvml_code(self) -> u32 {
        match self {
            Self::Kepler => 2,
            Self::Maxwell => 3,
            Self::Pascal => 4,
            Self::Volta => 5,
            Self::Turing => 6,
            Self::Ampere => 7,
            Self::Ada => 8,
            Self::Hopper => 9,
            Self::Blackwell => 10,
        }
    }
}

/// Product brand, as `nvmlDeviceGetBrand` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Brand {
    /// `NVML_BRAND_QUADRO`.
    Quadro,
    /// `NVML_BRAND_TESLA`.
    Tesla,
    /// `NVML_BRAND_GEFORCE`: what GeForce boards report.
    Geforce,
    /// `NVML_BRAND_TITAN`.
    Titan,
    /// `NVML_BRAND_NVIDIA_RTX`.
    NvidiaRtx,
    /// `NVML_BRAND_NVIDIA`: what current data-centre boards report.
    Nvidia,
    /// `NVML_BRAND_GEFORCE_RTX`.
    GeforceRtx,
}

impl Brand {
    /// The `NVML_BRAND_*` value.
    pub fn nvml_code(self) -> u32 {
        match self {
            Self::Quadro => 1,
            Self::Tesla => 2,
            Self::Geforce => 5,
            Self::Titan => 6,
            Self::NvidiaRtx => 13,
            Self::Nvidia => 14,
            Self::GeforceRtx => 15,
        }
    }
}

/// An integer written either as a number or as a `0x…` hex string (PCI ids
/// read better in hex).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct HexU32(pub u32);

impl<'de> Deserialize<'de> for HexU32 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u32),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(n) => Ok(Self(n)),
            Raw::Text(text) => {
                let digits = text
                    .strip_prefix("0x")
                    .or_else(|| text.strip_prefix("0X"))
                    .ok_or_else(|| {
                        serde::de::Error::custom(format!("`{text}`: write hex as 0x…"))
                    })?;
                u32::from_str_radix(digits, 16)
                    .map(Self)
                    .map_err(|_| serde::de::Error::custom(format!("`{text}` is not a hex u32")))
            }
        }
    }
}

/// CUDA compute capability, written `"8.9"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ComputeCapability {
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
}

impl<'de> Deserialize<'de> for ComputeCapability {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let parsed = text
            .split_once('.')
            .and_then(|(major, minor)| Some((major.parse().ok()?, minor.parse().ok()?)));
        match parsed {
            Some((major, minor)) => Ok(Self { major, minor }),
            None => Err(serde::de::Error::custom(format!(
                "`{text}` is not a compute capability: write it as \"8.9\""
            ))),
        }
    }
}

/// Memory facts of a card.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CardMemory {
    /// Total framebuffer as NVML reports it (`nvmlMemory_t.total`).
    pub total: ByteSize,
    /// Memory the driver reserves (`nvmlMemory_v2_t.reserved`).
    pub reserved: ByteSize,
}

/// Power facts of a card, in watts.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CardPower {
    /// Default (and enforced) power limit.
    pub default_limit_w: u32,
    /// Lowest settable limit.
    pub min_limit_w: u32,
    /// Highest settable limit.
    pub max_limit_w: u32,
}

/// Temperature thresholds of a card, in °C.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CardTemperature {
    /// `NVML_TEMPERATURE_THRESHOLD_SHUTDOWN`.
    pub shutdown_c: u32,
    /// `NVML_TEMPERATURE_THRESHOLD_SLOWDOWN`.
    pub slowdown_c: u32,
    /// `NVML_TEMPERATURE_THRESHOLD_GPU_MAX`.
    pub gpu_max_c: u32,
}

/// Maximum clocks of a card, in MHz.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CardClocks {
    /// Graphics clock.
    pub graphics: u32,
    /// SM clock.
    pub sm: u32,
    /// Memory clock.
    pub memory: u32,
    /// Video clock.
    pub video: u32,
}

/// PCI identity of a card model.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CardPci {
    /// Combined device and vendor id, e.g. `0x268410DE`.
    pub device_id: HexU32,
    /// Combined subsystem id.
    pub subsystem_id: HexU32,
    /// Maximum PCIe link generation.
    pub max_link_gen: u32,
    /// Maximum PCIe link width.
    pub max_link_width: u32,
}

/// Video engines of the whole card.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CardEngines {
    /// NVENC count (0 on A100/H100: encoder queries are NOT_SUPPORTED).
    pub encoders: u32,
    /// NVDEC count.
    pub decoders: u32,
}

/// Where instances of a GPU-instance profile may be placed: every start in
/// `starts`, each spanning `size` memory slices.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PlacementSpec {
    /// Memory slices one instance spans.
    pub size: u32,
    /// Allowed first memory slices.
    pub starts: Vec<u32>,
}

/// One row of the GPU-instance profile table (`nvidia-smi mig -lgip`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GiProfileSpec {
    /// Canonical name without the `MIG ` prefix, e.g. `1g.5gb` or `1g.5gb+me`.
    pub name: String,
    /// Profile index (`NVML_GPU_INSTANCE_PROFILE_*`): what
    /// `nvmlDeviceGetGpuInstanceProfileInfo` takes.
    pub index: u32,
    /// Profile id: what the info struct returns and create calls take.
    pub id: u32,
    /// Compute slices.
    pub slices: u32,
    /// Maximum number of instances of this profile.
    pub instances: u32,
    /// Memory of one instance (reported in MiB).
    pub memory: ByteSize,
    /// Streaming multiprocessors.
    pub sm_count: u32,
    /// Copy engines.
    pub copy_engines: u32,
    /// NVDEC units.
    pub decoders: u32,
    /// NVENC units.
    pub encoders: u32,
    /// NVJPG units.
    pub jpeg: u32,
    /// Optical-flow accelerators.
    pub ofa: u32,
    /// Whether peer-to-peer is supported.
    #[serde(default)]
    pub p2p: bool,
    /// Possible placements.
    pub placements: PlacementSpec,
}

/// One compute-instance profile: offered inside every GPU instance that has
/// at least `slices` compute slices.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CiProfileSpec {
    /// Profile index (`NVML_COMPUTE_INSTANCE_PROFILE_*`).
    pub index: u32,
    /// Profile id (equal to the index on every shipping GPU).
    pub id: u32,
    /// Compute slices.
    pub slices: u32,
}

/// MIG facts of a card.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MigSpec {
    /// Compute slices of the whole GPU (7 on A100 and H100).
    pub compute_slices: u32,
    /// Memory slices of the whole GPU (8 on A100 and H100).
    pub memory_slices: u32,
    /// Whether MIG mode survives a reboot (true on Ampere; on Hopper and
    /// later the mode is lost and must be enabled again after boot).
    pub mode_survives_reboot: bool,
    /// GPU-instance profiles.
    pub gpu_instance_profiles: Vec<GiProfileSpec>,
    /// Compute-instance profiles.
    pub compute_instance_profiles: Vec<CiProfileSpec>,
}

impl MigSpec {
    /// The GPU-instance profile with this index.
    pub fn gi_profile_by_index(&self, index: u32) -> Option<&GiProfileSpec> {
        self.gpu_instance_profiles.iter().find(|p| p.index == index)
    }

    /// The GPU-instance profile with this id.
    pub fn gi_profile_by_id(&self, id: u32) -> Option<&GiProfileSpec> {
        self.gpu_instance_profiles.iter().find(|p| p.id == id)
    }

    /// The GPU-instance profile with this name (`3g.20gb`, or `MIG 3g.20gb`).
    pub fn gi_profile_by_name(&self, name: &str) -> Option<&GiProfileSpec> {
        let name = name.strip_prefix("MIG ").unwrap_or(name);
        self.gpu_instance_profiles.iter().find(|p| p.name == name)
    }
}

/// Everything a card file says about a GPU model.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CardSpec {
    /// Product name (`nvmlDeviceGetName`).
    pub name: String,
    /// Architecture.
    pub architecture: Architecture,
    /// Brand.
    pub brand: Brand,
    /// CUDA compute capability.
    pub compute_capability: ComputeCapability,
    /// Streaming multiprocessors of the whole GPU.
    pub sm_count: u32,
    /// Memory.
    pub memory: CardMemory,
    /// Power limits.
    pub power: CardPower,
    /// Temperature thresholds.
    pub temperature: CardTemperature,
    /// Maximum clocks.
    pub max_clocks_mhz: CardClocks,
    /// Number of fans (0 on passively cooled boards: fan queries are NOT_SUPPORTED).
    pub fans: u32,
    /// Whether the board reports a serial number (GeForce boards do not).
    pub has_serial: bool,
    /// Whether the board is a multi-GPU board.
    #[serde(default)]
    pub multi_gpu_board: bool,
    /// PCI identity.
    pub pci: CardPci,
    /// Video engines.
    pub engines: CardEngines,
    /// MIG facts; absent on boards without MIG.
    #[serde(default)]
    pub mig: Option<MigSpec>,
}

/// A telemetry value: a constant, or a base plus a deterministic periodic swing.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Wave<T> {
    /// Always this value.
    Fixed(T),
    /// `base + swing * sin(2π t / period + phase)`.
    Varying {
        /// Centre value.
        base: T,
        /// Amplitude.
        swing: T,
    },
}

impl<T: Copy> Wave<T> {
    /// `(base, swing)`.
    pub fn parts(&self, zero: T) -> (T, T) {
        match *self {
            Self::Fixed(value) => (value, zero),
            Self::Varying { base, swing } => (base, swing),
        }
    }
}

fn default_period() -> f64 {
    60.0
}
fn wave_bytes_zero() -> Wave<ByteSize> {
    Wave::Fixed(ByteSize(0))
}
fn wave_zero() -> Wave<f64> {
    Wave::Fixed(0.0)
}
fn wave_temperature() -> Wave<f64> {
    Wave::Fixed(35.0)
}
fn wave_power() -> Wave<f64> {
    Wave::Fixed(30.0)
}
fn wave_fan() -> Wave<f64> {
    Wave::Fixed(30.0)
}

/// Telemetry of one GPU.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySpec {
    /// Period of the swing, in seconds.
    #[serde(default = "default_period")]
    pub period_s: f64,
    /// Memory in use by processes (excluding the driver's reserve).
    #[serde(default = "wave_bytes_zero")]
    pub memory_used: Wave<ByteSize>,
    /// GPU utilisation, percent.
    #[serde(default = "wave_zero")]
    pub gpu_util: Wave<f64>,
    /// Memory-controller utilisation, percent.
    #[serde(default = "wave_zero")]
    pub memory_util: Wave<f64>,
    /// GPU temperature, °C.
    #[serde(default = "wave_temperature")]
    pub temperature_c: Wave<f64>,
    /// Board power draw, watts.
    #[serde(default = "wave_power")]
    pub power_w: Wave<f64>,
    /// Fan speed, percent (ignored on boards without fans).
    #[serde(default = "wave_fan")]
    pub fan_percent: Wave<f64>,
}

impl Default for TelemetrySpec {
    fn default() -> Self {
        Self {
            period_s: default_period(),
            memory_used: wave_bytes_zero(),
            gpu_util: wave_zero(),
            memory_util: wave_zero(),
            temperature_c: wave_temperature(),
            power_w: wave_power(),
            fan_percent: wave_fan(),
        }
    }
}

/// `nvmlComputeMode_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ComputeMode {
    /// Several contexts per device.
    #[default]
    Default,
    /// One context per device, usable from one thread at a time.
    ExclusiveThread,
    /// No contexts.
    Prohibited,
    /// One context per device, usable from many threads (what MPS wants).
    ExclusiveProcess,
}

impl ComputeMode {
    /// The `NVML_COMPUTEMODE_*` value.
    pub fn nvml_code(self) -> u32 {
        match self {
            Self::Default => 0,
            Self::ExclusiveThread => 1,
            Self::Prohibited => 2,
            Self::ExclusiveProcess => 3,
        }
    }
}

/// `enabled` / `disabled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Toggle {
    /// On.
    Enabled,
    /// Off.
    Disabled,
}

impl Toggle {
    /// Whether this is `enabled`.
    pub fn is_enabled(self) -> bool {
        self == Self::Enabled
    }
}

/// The host file's entry for one GPU.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct GpuEntry {
    card: PathBuf,
    #[serde(default)]
    uuid: Option<String>,
    pci_bus_id: String,
    #[serde(default)]
    serial: Option<String>,
    #[serde(default)]
    mig_mode: Option<Toggle>,
    #[serde(default)]
    persistence_mode: Option<Toggle>,
    #[serde(default)]
    compute_mode: ComputeMode,
    #[serde(default)]
    telemetry: TelemetrySpec,
    #[serde(default)]
    lost: bool,
}

fn default_driver_version() -> String {
    "570.133.20".to_owned()
}

fn default_cuda_version() -> String {
    "12.8".to_owned()
}

/// The host file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostFile {
    #[serde(default)]
    name: Option<String>,
    #[serde(default = "default_driver_version")]
    driver_version: String,
    #[serde(default)]
    nvml_version: Option<String>,
    #[serde(default = "default_cuda_version")]
    cuda_driver_version: String,
    gpus: Vec<GpuEntry>,
}

/// A PCI address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct PciAddress {
    /// Domain.
    pub domain: u32,
    /// Bus.
    pub bus: u32,
    /// Device.
    pub device: u32,
    /// Function.
    pub function: u32,
}

impl PciAddress {
    /// Parses `00000000:01:00.0` or the legacy `0000:01:00.0` (hex, any case).
    pub fn parse(text: &str) -> Option<Self> {
        let (domain, rest) = text.trim().split_once(':')?;
        let (bus, rest) = rest.split_once(':')?;
        let (device, function) = rest.split_once('.')?;
        let hex = |s: &str, max_len: usize| {
            if s.is_empty() || s.len() > max_len {
                None
            } else {
                u32::from_str_radix(s, 16).ok()
            }
        };
        Some(Self {
            domain: hex(domain, 8)?,
            bus: hex(bus, 2)?,
            device: hex(device, 2)?,
            function: hex(function, 1)?,
        })
    }

    /// `NVML_DEVICE_PCI_BUS_ID_FMT`: `00000000:01:00.0`.
    pub fn bus_id(&self) -> String {
        format!(
            "{:08X}:{:02X}:{:02X}.{:X}",
            self.domain, self.bus, self.device, self.function
        )
    }

    /// `NVML_DEVICE_PCI_BUS_ID_LEGACY_FMT`: `0000:01:00.0`.
    pub fn legacy_bus_id(&self) -> String {
        format!(
            "{:04X}:{:02X}:{:02X}.{:X}",
            self.domain, self.bus, self.device, self.function
        )
    }
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.bus_id())
    }
}

/// One simulated GPU, resolved and validated.
#[derive(Debug, Clone)]
pub struct GpuConfig {
    /// NVML index.
    pub index: u32,
    /// Model facts.
    pub card: Arc<CardSpec>,
    /// Absolute path of the card file.
    pub card_path: PathBuf,
    /// `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
    pub uuid: String,
    /// PCI address.
    pub pci: PciAddress,
    /// Serial number, if the board reports one.
    pub serial: Option<String>,
    /// MIG mode at first start (and what an Ampere reboot keeps).
    pub initial_mig: bool,
    /// Persistence mode.
    pub persistence: bool,
    /// Compute mode.
    pub compute_mode: ComputeMode,
    /// Telemetry.
    pub telemetry: TelemetrySpec,
    /// Whether the GPU starts lost.
    pub initially_lost: bool,
}

impl GpuConfig {
    /// MIG facts, if the card has MIG.
    pub fn mig(&self) -> Option<&MigSpec> {
        self.card.mig.as_ref()
    }
}

/// A loaded host description.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Absolute path of the host file.
    pub path: PathBuf,
    /// Host name (defaults to the file stem).
    pub host_name: String,
    /// `nvmlSystemGetDriverVersion`.
    pub driver_version: String,
    /// `nvmlSystemGetNVMLVersion`.
    pub nvml_version: String,
    /// `nvmlSystemGetCudaDriverVersion`, e.g. 12080.
    pub cuda_driver_version: i32,
    /// GPUs in NVML index order.
    pub gpus: Vec<GpuConfig>,
}

fn read_yaml<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    serde_yaml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

fn absolute(path: &Path) -> Result<PathBuf, ConfigError> {
    std::path::absolute(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Loads and validates one card file.
pub fn load_card(path: &Path) -> Result<CardSpec, ConfigError> {
    let card: CardSpec = read_yaml(path)?;
    validate_card(&card).map_err(|message| ConfigError::Invalid {
        path: path.to_owned(),
        message,
    })?;
    Ok(card)
}

fn validate_card(card: &CardSpec) -> Result<(), String> {
    if card.name.is_empty() || card.name.len() >= 64 {
        return Err("name must be 1 to 63 characters (NVML_DEVICE_NAME_BUFFER_SIZE)".into());
    }
    if card.memory.reserved.bytes() >= card.memory.total.bytes() {
        return Err("memory.reserved must be smaller than memory.total".into());
    }
    let power = &card.power;
    if !(power.min_limit_w <= power.default_limit_w && power.default_limit_w <= power.max_limit_w) {
        return Err("power: need min_limit_w <= default_limit_w <= max_limit_w".into());
    }
    if let Some(mig) = &card.mig {
        validate_mig(mig, card)?;
    }
    Ok(())
}

fn validate_mig(mig: &MigSpec, card: &CardSpec) -> Result<(), String> {
    if !mig.memory_slices.is_power_of_two() {
        return Err(format!(
            "mig.memory_slices is {}: it must be a power of two (GPU-instance ids follow the slice tree)",
            mig.memory_slices
        ));
    }
    if mig.compute_slices == 0 {
        return Err("mig.compute_slices must be at least 1".into());
    }
    let mut indexes = HashSet::new();
    let mut ids = HashSet::new();
    let mut names = HashSet::new();
    for p in &mig.gpu_instance_profiles {
        let at = format!("mig.gpu_instance_profiles[{}]", p.name);
        if p.index >= GPU_INSTANCE_PROFILE_INDEX_COUNT {
            return Err(format!(
                "{at}: index {} is not an NVML_GPU_INSTANCE_PROFILE_* value (0..{})",
                p.index, GPU_INSTANCE_PROFILE_INDEX_COUNT
            ));
        }
        if !indexes.insert(p.index) || !ids.insert(p.id) || !names.insert(p.name.clone()) {
            return Err(format!("{at}: index, id and name must each be unique"));
        }
        if p.slices == 0 || p.slices > mig.compute_slices {
            return Err(format!("{at}: slices must be 1..={}", mig.compute_slices));
        }
        if p.instances == 0 {
            return Err(format!("{at}: instances must be at least 1"));
        }
        if p.memory.bytes() == 0 || p.memory.bytes() % MIB != 0 {
            return Err(format!("{at}: memory must be a whole number of MiB"));
        }
        if p.memory.bytes() > card.memory.total.bytes() {
            return Err(format!("{at}: memory exceeds the card's total memory"));
        }
        let size = p.placements.size;
        if !size.is_power_of_two() || size > mig.memory_slices {
            return Err(format!(
                "{at}: placements.size must be a power of two no larger than memory_slices"
            ));
        }
        if p.placements.starts.is_empty() {
            return Err(format!("{at}: placements.starts must not be empty"));
        }
        for &start in &p.placements.starts {
            if start % size != 0 || start + size > mig.memory_slices {
                return Err(format!(
                    "{at}: placement start {start} must be a multiple of size {size} and end within {} memory slices",
                    mig.memory_slices
                ));
            }
        }
        if format!("MIG {}", p.name).len() >= 96 {
            return Err(format!("{at}: name too long"));
        }
    }
    let mut ci_indexes = HashSet::new();
    let mut ci_ids = HashSet::new();
    for c in &mig.compute_instance_profiles {
        if c.index >= COMPUTE_INSTANCE_PROFILE_INDEX_COUNT {
            return Err(format!(
                "mig.compute_instance_profiles: index {} is not an NVML_COMPUTE_INSTANCE_PROFILE_* value",
                c.index
            ));
        }
        if !ci_indexes.insert(c.index) || !ci_ids.insert(c.id) {
            return Err("mig.compute_instance_profiles: index and id must each be unique".into());
        }
        if c.slices == 0 || c.slices > mig.compute_slices {
            return Err(format!(
                "mig.compute_instance_profiles: slices must be 1..={}",
                mig.compute_slices
            ));
        }
    }
    for p in &mig.gpu_instance_profiles {
        if !mig
            .compute_instance_profiles
            .iter()
            .any(|c| c.slices == p.slices)
        {
            return Err(format!(
                "mig: no compute-instance profile spans all {} slices of GPU-instance profile {}",
                p.slices, p.name
            ));
        }
    }
    Ok(())
}

/// Whether `text` has the shape `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
pub fn is_gpu_uuid(text: &str) -> bool {
    text.strip_prefix("GPU-").is_some_and(is_uuid_body)
}

/// Whether `text` has the shape `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (lower-case hex).
pub fn is_uuid_body(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups.iter().zip([8, 4, 4, 4, 12]).all(|(g, len)| {
            g.len() == len
                && g.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
}

/// Formats 16 bytes as a UUID body.
pub fn uuid_body(bytes: [u8; 16]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// A deterministic 128-bit digest (two FNV-1a passes with different seeds);
/// used for identities that must be the same in every process and release.
pub fn digest128(parts: &[&str]) -> [u8; 16] {
    let fnv = |seed: u64| {
        let mut hash = seed;
        for part in parts {
            for &b in part.as_bytes().iter().chain(std::iter::once(&0u8)) {
                hash ^= u64::from(b);
                hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        hash
    };
    // The FNV-1a offset basis, and the same basis mixed with the golden-ratio
    // constant so the two halves are independent.
    let a = fnv(0xcbf2_9ce4_8422_2325);
    let b = fnv(0xcbf2_9ce4_8422_2325 ^ 0x9e37_79b9_7f4a_7c15);
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&a.to_be_bytes());
    out[8..].copy_from_slice(&b.to_be_bytes());
    out
}

fn parse_cuda_version(text: &str) -> Option<i32> {
    let (major, minor) = text.split_once('.')?;
    let major: i32 = major.parse().ok()?;
    let minor: i32 = minor.parse().ok()?;
    (0..100)
        .contains(&minor)
        .then_some(major * 1000 + minor * 10)
}

impl SimConfig {
    /// Loads a host file and every card file it refers to.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let path = absolute(path)?;
        let host: HostFile = read_yaml(&path)?;
        let invalid = |message: String| ConfigError::Invalid {
            path: path.clone(),
            message,
        };
        let base = path.parent().unwrap_or(Path::new("/"));
        let host_name = host.name.clone().unwrap_or_else(|| {
            path.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "host".to_owned())
        });
        if host.gpus.is_empty() {
            return Err(invalid("gpus: at least one GPU is needed".into()));
        }
        if host.driver_version.len() >= 80 {
            return Err(invalid("driver_version is too long".into()));
        }
        let cuda_driver_version =
            parse_cuda_version(&host.cuda_driver_version).ok_or_else(|| {
                invalid(format!(
                    "cuda_driver_version `{}` must look like \"12.8\"",
                    host.cuda_driver_version
                ))
            })?;
        let nvml_version = host.nvml_version.clone().unwrap_or_else(|| {
            let major = cuda_driver_version / 1000;
            format!("{major}.{}", host.driver_version)
        });

        let mut gpus = Vec::with_capacity(host.gpus.len());
        let mut cards: Vec<(PathBuf, Arc<CardSpec>)> = Vec::new();
        let mut uuids = HashSet::new();
        let mut buses = HashSet::new();
        for (i, entry) in host.gpus.iter().enumerate() {
            let at = format!("gpus[{i}]");
            let card_path = absolute(&base.join(&entry.card))?;
            let card = match cards.iter().find(|(p, _)| *p == card_path) {
                Some((_, card)) => Arc::clone(card),
                None => {
                    let card = Arc::new(load_card(&card_path)?);
                    cards.push((card_path.clone(), Arc::clone(&card)));
                    card
                }
            };
            let pci = PciAddress::parse(&entry.pci_bus_id).ok_or_else(|| {
                invalid(format!(
                    "{at}.pci_bus_id `{}` must look like 00000000:01:00.0",
                    entry.pci_bus_id
                ))
            })?;
            if !buses.insert(pci) {
                return Err(invalid(format!("{at}.pci_bus_id {pci} is used twice")));
            }
            let uuid = match &entry.uuid {
                Some(uuid) if is_gpu_uuid(uuid) => uuid.clone(),
                Some(uuid) => {
                    return Err(invalid(format!(
                        "{at}.uuid `{uuid}` must look like GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx (lower-case hex)"
                    )));
                }
                None => format!(
                    "GPU-{}",
                    uuid_body(digest128(&[&host_name, &pci.bus_id(), &card.name]))
                ),
            };
            if !uuids.insert(uuid.clone()) {
                return Err(invalid(format!("{at}.uuid {uuid} is used twice")));
            }
            let serial = if card.has_serial {
                let serial = entry.serial.clone().unwrap_or_else(|| {
                    let d = digest128(&[&uuid, "serial"]);
                    let n = u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]);
                    format!("{:013}", n % 10_000_000_000_000)
                });
                if serial.len() >= 30 {
                    return Err(invalid(format!("{at}.serial is too long")));
                }
                Some(serial)
            } else if entry.serial.is_some() {
                return Err(invalid(format!(
                    "{at}.serial: {} boards report no serial number (has_serial: false in the card file)",
                    card.name
                )));
            } else {
                None
            };
            let initial_mig = match (entry.mig_mode, card.mig.is_some()) {
                (Some(mode), true) => mode.is_enabled(),
                (None, _) => false,
                (Some(Toggle::Disabled), false) => false,
                (Some(Toggle::Enabled), false) => {
                    return Err(invalid(format!(
                        "{at}.mig_mode: {} has no MIG; remove mig_mode or use a MIG-capable card",
                        card.name
                    )));
                }
            };
            validate_telemetry(&entry.telemetry)
                .map_err(|m| invalid(format!("{at}.telemetry: {m}")))?;
            gpus.push(GpuConfig {
                index: i as u32,
                card,
                card_path,
                uuid,
                pci,
                serial,
                initial_mig,
                persistence: entry
                    .persistence_mode
                    .unwrap_or(Toggle::Enabled)
                    .is_enabled(),
                compute_mode: entry.compute_mode,
                telemetry: entry.telemetry.clone(),
                initially_lost: entry.lost,
            });
        }
        Ok(Self {
            path,
            host_name,
            driver_version: host.driver_version,
            nvml_version,
            cuda_driver_version,
            gpus,
        })
    }
}

fn validate_telemetry(t: &TelemetrySpec) -> Result<(), String> {
    if !(t.period_s.is_finite() && t.period_s > 0.0) {
        return Err("period_s must be a positive number of seconds".into());
    }
    for (name, wave) in [
        ("gpu_util", t.gpu_util),
        ("memory_util", t.memory_util),
        ("temperature_c", t.temperature_c),
        ("power_w", t.power_w),
        ("fan_percent", t.fan_percent),
    ] {
        let (base, swing) = wave.parts(0.0);
        if !(base.is_finite() && swing.is_finite() && base >= 0.0 && swing >= 0.0) {
            return Err(format!(
                "{name}: base and swing must be non-negative numbers"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pci_addresses_parse_in_both_forms() {
        let long = PciAddress::parse("00000000:1A:00.0").expect("long form");
        let legacy = PciAddress::parse("0000:1a:00.0").expect("legacy form");
        assert_eq!(long, legacy);
        assert_eq!(long.bus_id(), "00000000:1A:00.0");
        assert_eq!(long.legacy_bus_id(), "0000:1A:00.0");
        assert!(PciAddress::parse("1A:00.0").is_none());
        assert!(PciAddress::parse("0000:1A:00").is_none());
    }

    #[test]
    fn uuid_shape_is_checked() {
        assert!(is_gpu_uuid("GPU-0123abcd-0000-1111-2222-333344445555"));
        assert!(!is_gpu_uuid("GPU-0123ABCD-0000-1111-2222-333344445555"));
        assert!(!is_gpu_uuid("MIG-0123abcd-0000-1111-2222-333344445555"));
        assert!(!is_gpu_uuid("GPU-0123abcd-0000-1111-2222"));
        let body = uuid_body(digest128(&["a", "b"]));
        assert!(is_uuid_body(&body), "{body}");
        assert_ne!(digest128(&["a", "b"]), digest128(&["ab"]));
    }

    /// Loads `host` (with `@SIM@` standing for the shipped card directory)
    /// and returns the error text.
    fn load_error(host: &str) -> String {
        let dir = tempfile::tempdir().expect("temp dir");
        let sim = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/sim");
        let path = dir.path().join("host.yaml");
        std::fs::write(&path, host.replace("@SIM@", &sim.display().to_string())).expect("write");
        match SimConfig::load(&path) {
            Ok(_) => panic!("{host} should be rejected"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn bad_host_files_are_rejected_with_file_and_reason() {
        let cases = [
            (
                "gpus:\n  - card: @SIM@/rtx4090.yaml\n    pci_bus_id: \"00000000:01:00.0\"\n    colour: red\n",
                "unknown field `colour`",
            ),
            (
                "gpus:\n  - card: @SIM@/rtx4090.yaml\n    pci_bus_id: \"00000000:01:00.0\"\n    mig_mode: enabled\n",
                "has no MIG",
            ),
            (
                "gpus:\n  - card: @SIM@/rtx4090.yaml\n    pci_bus_id: \"00000000:01:00.0\"\n    uuid: GPU-1234\n",
                "must look like GPU-",
            ),
            (
                "gpus:\n  - card: @SIM@/a100-sxm4-40gb.yaml\n    pci_bus_id: \"07:00.0\"\n",
                "pci_bus_id",
            ),
            (
                "gpus:\n  - card: @SIM@/a100-sxm4-40gb.yaml\n    pci_bus_id: \"00000000:07:00.0\"\n  - card: @SIM@/a100-sxm4-40gb.yaml\n    pci_bus_id: \"0000:07:00.0\"\n",
                "used twice",
            ),
            (
                "gpus:\n  - card: @SIM@/rtx4090.yaml\n    pci_bus_id: \"00000000:01:00.0\"\n    serial: \"123\"\n",
                "report no serial",
            ),
            ("gpus: []\n", "at least one GPU"),
            (
                "gpus:\n  - card: @SIM@/no-such-card.yaml\n    pci_bus_id: \"00000000:01:00.0\"\n",
                "no-such-card.yaml: cannot read",
            ),
        ];
        for (host, want) in cases {
            let error = load_error(host);
            assert!(error.contains(want), "`{error}` should mention `{want}`");
            assert!(error.contains(".yaml"), "`{error}` should name the file");
        }
        let located = load_error(
            "gpus:\n  - card: @SIM@/rtx4090.yaml\n    pci_bus_id: \"00000000:01:00.0\"\n    colour: red\n",
        );
        assert!(
            located.contains("line 4"),
            "YAML errors carry the line: {located}"
        );
    }

    #[test]
    fn shipped_cards_load() {
        let sim = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/sim");
        for (card, mig_profiles) in [
            ("rtx4090.yaml", 0),
            ("rtx3060.yaml", 0),
            ("a100-sxm4-40gb.yaml", 7),
            ("h100-80gb-hbm3.yaml", 7),
        ] {
            let spec = load_card(&sim.join(card)).expect(card);
            assert_eq!(
                spec.mig.map_or(0, |m| m.gpu_instance_profiles.len()),
                mig_profiles,
                "{card}"
            );
        }
    }

    #[test]
    fn cuda_versions_parse() {
        assert_eq!(parse_cuda_version("12.8"), Some(12080));
        assert_eq!(parse_cuda_version("13.0"), Some(13000));
        assert_eq!(parse_cuda_version("12"), None);
    }
}
