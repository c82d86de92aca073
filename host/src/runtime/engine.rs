//! The one wasmtime `Engine` every route shares, tuned for a fresh instance
//! per request, and the epoch ticker that enforces request deadlines.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances. A guest past its deadline is stopped
/// within one tick; a busy guest yields to other requests once per tick,
/// and then leaves the serving threads ([`crate::runtime::lane`]).
/// Measured: 1 and 2 ms ticks raised hello's p99 from 8 to 30-36 ms on
/// `benches/fairness.sh` with no gain in fairness, so it stays at 10.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Linear memory kept mapped (and reset in place) between instances, so a
/// hot route does not page-fault its heap back in on every request.
const KEEP_RESIDENT: usize = 2 << 20;

/// Builds the engine: Cranelift, async, epoch interruption and a pooling
/// allocator sized for `max_instances` live instances.
pub fn new_engine(max_instances: u32) -> wasmtime::Result<Engine> {
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(max_instances)
        // A component built from Rust has a handful of core instances, a
        // memory or two and a few tables; size the pool for that shape.
        .total_core_instances(max_instances.saturating_mul(8))
        .total_memories(max_instances.saturating_mul(2))
        .total_tables(max_instances.saturating_mul(4))
        .total_stacks(max_instances)
        .max_core_instances_per_component(32)
        .max_memories_per_component(4)
        .max_tables_per_component(16)
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(64 << 10)
        .pagemap_scan(Enabled::Auto);

    let mut config = Config::new();
    config
        .epoch_interruption(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config)
}

/// Advances the engine's epoch every [`EPOCH_TICK`] on a dedicated thread
/// (a tokio timer would stall exactly when guests hog the workers). Stops
/// when dropped.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    /// Starts ticking `engine`.
    pub fn start(engine: &Engine) -> EpochTicker {
        let stop = Arc::new(AtomicBool::new(false));
        let engine = engine.weak();
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("trellis-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match engine.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .expect("spawning the epoch thread");
        EpochTicker { stop }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
