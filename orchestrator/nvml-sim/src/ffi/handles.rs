//! Opaque handles handed to NVML clients: `nvmlDevice_t` (for GPUs and MIG
//! devices), `nvmlGpuInstance_t` and `nvmlComputeInstance_t`.
//!
//! Each distinct object gets one small heap cell, leaked on purpose, whose
//! address is the handle: handles stay valid pointers for the life of the
//! process (across `nvmlShutdown`/`nvmlInit`), and asking twice for the same
//! object yields the same handle, as with the real library. Incoming handles
//! are never dereferenced: they are looked up by address, so a stale or
//! garbage pointer is answered with `NVML_ERROR_INVALID_ARGUMENT` instead of
//! undefined behaviour.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, PoisonError};

/// What a handle refers to. Instances are named by GPU index and ids, so a
/// handle outlives the instance it named; calls on it then fail cleanly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HandleKey {
    /// A physical GPU.
    Gpu(u32),
    /// A MIG device (one compute instance of one GPU instance).
    MigDevice {
        /// GPU index.
        gpu: u32,
        /// GPU-instance id.
        gi: u32,
        /// Compute-instance id.
        ci: u32,
    },
    /// A GPU instance.
    GpuInstance {
        /// GPU index.
        gpu: u32,
        /// GPU-instance id.
        gi: u32,
    },
    /// A compute instance.
    ComputeInstance {
        /// GPU index.
        gpu: u32,
        /// GPU-instance id.
        gi: u32,
        /// Compute-instance id.
        ci: u32,
    },
}

/// The heap cell a handle points at. Its content is only for debuggers;
/// the registry maps addresses to keys.
#[derive(Debug)]
struct Cell {
    _key: HandleKey,
}

#[derive(Debug, Default)]
struct Registry {
    by_key: HashMap<HandleKey, usize>,
    by_address: HashMap<usize, HandleKey>,
}

/// One registry per process. The lock is held only for a map lookup or insert.
static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(|| Mutex::new(Registry::default()));

/// The handle for `key`, created on first use.
pub fn handle<T>(key: HandleKey) -> *mut T {
    let mut registry = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(&address) = registry.by_key.get(&key) {
        return std::ptr::with_exposed_provenance_mut(address);
    }
    // Leaked on purpose: handles must stay valid for the process lifetime.
    let cell: &'static mut Cell = Box::leak(Box::new(Cell { _key: key }));
    let pointer = std::ptr::from_mut(cell);
    let address = pointer.expose_provenance();
    registry.by_key.insert(key, address);
    registry.by_address.insert(address, key);
    pointer.cast()
}

/// What `handle` refers to, if it is one of ours.
pub fn resolve<T>(handle: *mut T) -> Option<HandleKey> {
    if handle.is_null() {
        return None;
    }
    let registry = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
    registry.by_address.get(&handle.addr()).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_key_same_handle_and_unknown_pointers_resolve_to_nothing() {
        let a = handle::<u8>(HandleKey::Gpu(41));
        let b = handle::<u8>(HandleKey::Gpu(41));
        let c = handle::<u8>(HandleKey::GpuInstance { gpu: 41, gi: 1 });
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(resolve(a), Some(HandleKey::Gpu(41)));
        assert_eq!(resolve(c), Some(HandleKey::GpuInstance { gpu: 41, gi: 1 }));
        assert_eq!(resolve(std::ptr::null_mut::<u8>()), None);
        let stray = std::ptr::without_provenance_mut::<u8>(0x10);
        assert_eq!(resolve(stray), None);
    }
}
