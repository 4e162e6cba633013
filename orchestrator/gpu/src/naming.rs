//! MIG profile names as NVIDIA writes them (`1g.10gb`, `1g.5gb+me`), from
//! what NVML reports.
//!
//! Newer drivers put the name in the v2/v3 profile-info struct
//! (`"MIG 1g.10gb"`); older ones only give slice count and memory, and the
//! name is derived the way NVIDIA's own tools do (memory as a fraction of the
//! board's, rounded up to eighths, times the board's memory in whole GB).

use std::ffi::c_char;

/// The profile name in a v2/v3 info struct's `name` field, without the
/// `MIG ` prefix; `None` when the field is empty or not NUL-terminated.
pub(crate) fn from_struct_name(raw: &[c_char]) -> Option<String> {
    // INVARIANT: never read past the array, even when the library forgot the NUL.
    let len = raw.iter().position(|&c| c == 0)?;
    let bytes: Vec<u8> = raw[..len].iter().map(|&c| c as u8).collect();
    let text = String::from_utf8_lossy(&bytes);
    let text = text.trim();
    let name = match text.strip_prefix("MIG") {
        Some(rest) if rest.is_empty() || rest.starts_with(' ') => rest.trim(),
        _ => text,
    };
    (!name.is_empty()).then(|| name.to_owned())
}

/// The name NVIDIA gives a GPU-instance profile, derived from its facts.
///
/// `profile_index` is the `NVML_GPU_INSTANCE_PROFILE_*` value: it tells the
/// media-engine and graphics variants apart, which slice count and memory
/// alone cannot.
pub(crate) fn derive(
    profile_index: u32,
    slices: u32,
    memory_mib: u64,
    board_memory_bytes: u64,
) -> String {
    let gb = memory_gb(memory_mib, board_memory_bytes);
    let suffix = match profile_index {
        // NVML_GPU_INSTANCE_PROFILE_{1,2}_SLICE_REV1
        7 | 8 => "+me",
        // NVML_GPU_INSTANCE_PROFILE_{1,2,4}_SLICE_GFX
        10..=12 => "+gfx",
        // NVML_GPU_INSTANCE_PROFILE_{1,2}_SLICE_NO_ME
        13 | 14 => "-me",
        // NVML_GPU_INSTANCE_PROFILE_{1,2}_SLICE_ALL_ME
        15 | 16 => "+me.all",
        _ => "",
    };
    format!("{slices}g.{gb}gb{suffix}")
}

/// Memory of a profile in the GB NVIDIA's names use: 4864 MiB of a 40 GiB
/// A100 is "5gb", 81152 MiB of an 80 GB H100 is "80gb".
fn memory_gb(memory_mib: u64, board_memory_bytes: u64) -> u64 {
    const GIB: u64 = 1024 * 1024 * 1024;
    if board_memory_bytes == 0 {
        return memory_mib.div_ceil(1024);
    }
    let board_gb = board_memory_bytes.div_ceil(GIB);
    // Eighths of the board, rounded up, in integer arithmetic:
    // ceil(8 * memory / board).
    let memory_bytes = memory_mib.saturating_mul(1024 * 1024);
    let eighths = (u128::from(memory_bytes) * 8).div_ceil(u128::from(board_memory_bytes));
    // round(eighths / 8 * board_gb)
    let gb = (eighths * u128::from(board_gb) + 4) / 8;
    u64::try_from(gb).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn raw(text: &str) -> [c_char; 96] {
        let mut out = [0 as c_char; 96];
        for (slot, b) in out.iter_mut().zip(text.bytes()) {
            *slot = b as c_char;
        }
        out
    }

    #[test]
    fn struct_names_lose_the_mig_prefix() {
        for (text, want) in [
            ("MIG 1g.10gb", Some("1g.10gb")),
            ("MIG 1g.5gb+me", Some("1g.5gb+me")),
            ("3g.40gb", Some("3g.40gb")),
            ("", None),
            ("MIG ", None),
        ] {
            assert_eq!(from_struct_name(&raw(text)).as_deref(), want, "{text:?}");
        }
        let unterminated = [b'x' as c_char; 4];
        assert_eq!(from_struct_name(&unterminated), None);
    }

    #[test]
    fn derived_names_match_nvidias_tables() {
        // (index, slices, memory MiB as NVML reports it, board MiB, name)
        let a100 = 40960 * MIB;
        let h100 = 81559 * MIB;
        let table = [
            (0, 1, 4864, a100, "1g.5gb"),
            (7, 1, 4864, a100, "1g.5gb+me"),
            (9, 1, 9856, a100, "1g.10gb"),
            (1, 2, 9856, a100, "2g.10gb"),
            (2, 3, 19968, a100, "3g.20gb"),
            (3, 4, 19968, a100, "4g.20gb"),
            (4, 7, 40192, a100, "7g.40gb"),
            (0, 1, 9984, h100, "1g.10gb"),
            (7, 1, 9984, h100, "1g.10gb+me"),
            (9, 1, 20096, h100, "1g.20gb"),
            (1, 2, 20096, h100, "2g.20gb"),
            (2, 3, 40448, h100, "3g.40gb"),
            (3, 4, 40448, h100, "4g.40gb"),
            (4, 7, 81152, h100, "7g.80gb"),
        ];
        for (index, slices, mib, board, want) in table {
            assert_eq!(derive(index, slices, mib, board), want);
        }
        assert_eq!(derive(10, 1, 24 * 1024, 96 * 1024 * MIB), "1g.24gb+gfx");
        assert_eq!(derive(0, 1, 5000, 0), "1g.5gb", "no board size: round up");
    }
}
