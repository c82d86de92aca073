// The repository's `wit/`, compiled in (see `wit.rs`). `every_wit_file_is_embedded`
// fails when a file is added to `wit/` but not here.

/// The `trellis:api` package: `wit/*.wit`.
const TRELLIS_API: &[(&str, &str)] = &[
    ("cache.wit", include_str!("../../../wit/cache.wit")),
    ("config.wit", include_str!("../../../wit/config.wit")),
    ("health.wit", include_str!("../../../wit/health.wit")),
    ("identity.wit", include_str!("../../../wit/identity.wit")),
    ("log.wit", include_str!("../../../wit/log.wit")),
    ("metrics.wit", include_str!("../../../wit/metrics.wit")),
    ("queue.wit", include_str!("../../../wit/queue.wit")),
    ("rate-limit.wit", include_str!("../../../wit/rate-limit.wit")),
    ("sql.wit", include_str!("../../../wit/sql.wit")),
    ("worker.wit", include_str!("../../../wit/worker.wit")),
    ("worlds.wit", include_str!("../../../wit/worlds.wit")),
];

/// The WASI packages: `wit/deps/PACKAGE/*.wit`.
const WASI: &[(&str, &str)] = &[
    ("cli/command.wit", include_str!("../../../wit/deps/cli/command.wit")),
    ("cli/environment.wit", include_str!("../../../wit/deps/cli/environment.wit")),
    ("cli/exit.wit", include_str!("../../../wit/deps/cli/exit.wit")),
    ("cli/imports.wit", include_str!("../../../wit/deps/cli/imports.wit")),
    ("cli/run.wit", include_str!("../../../wit/deps/cli/run.wit")),
    ("cli/stdio.wit", include_str!("../../../wit/deps/cli/stdio.wit")),
    ("cli/terminal.wit", include_str!("../../../wit/deps/cli/terminal.wit")),
    ("clocks/monotonic-clock.wit", include_str!("../../../wit/deps/clocks/monotonic-clock.wit")),
    ("clocks/timezone.wit", include_str!("../../../wit/deps/clocks/timezone.wit")),
    ("clocks/wall-clock.wit", include_str!("../../../wit/deps/clocks/wall-clock.wit")),
    ("clocks/world.wit", include_str!("../../../wit/deps/clocks/world.wit")),
    ("filesystem/preopens.wit", include_str!("../../../wit/deps/filesystem/preopens.wit")),
    ("filesystem/types.wit", include_str!("../../../wit/deps/filesystem/types.wit")),
    ("filesystem/world.wit", include_str!("../../../wit/deps/filesystem/world.wit")),
    ("http/handler.wit", include_str!("../../../wit/deps/http/handler.wit")),
    ("http/proxy.wit", include_str!("../../../wit/deps/http/proxy.wit")),
    ("http/types.wit", include_str!("../../../wit/deps/http/types.wit")),
    ("io/error.wit", include_str!("../../../wit/deps/io/error.wit")),
    ("io/poll.wit", include_str!("../../../wit/deps/io/poll.wit")),
    ("io/streams.wit", include_str!("../../../wit/deps/io/streams.wit")),
    ("io/world.wit", include_str!("../../../wit/deps/io/world.wit")),
    ("random/insecure-seed.wit", include_str!("../../../wit/deps/random/insecure-seed.wit")),
    ("random/insecure.wit", include_str!("../../../wit/deps/random/insecure.wit")),
    ("random/random.wit", include_str!("../../../wit/deps/random/random.wit")),
    ("random/world.wit", include_str!("../../../wit/deps/random/world.wit")),
    ("sockets/instance-network.wit", include_str!("../../../wit/deps/sockets/instance-network.wit")),
    ("sockets/ip-name-lookup.wit", include_str!("../../../wit/deps/sockets/ip-name-lookup.wit")),
    ("sockets/network.wit", include_str!("../../../wit/deps/sockets/network.wit")),
    ("sockets/tcp-create-socket.wit", include_str!("../../../wit/deps/sockets/tcp-create-socket.wit")),
    ("sockets/tcp.wit", include_str!("../../../wit/deps/sockets/tcp.wit")),
    ("sockets/udp-create-socket.wit", include_str!("../../../wit/deps/sockets/udp-create-socket.wit")),
    ("sockets/udp.wit", include_str!("../../../wit/deps/sockets/udp.wit")),
    ("sockets/world.wit", include_str!("../../../wit/deps/sockets/world.wit")),
];
