/work/main/rust/pcieoe/target/debug/deps/quick_error-58c7d9f0b0fc8d97.d: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/quick-error-1.2.3/src/lib.rs

/work/main/rust/pcieoe/target/debug/deps/libquick_error-58c7d9f0b0fc8d97.rlib: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/quick-error-1.2.3/src/lib.rs

/work/main/rust/pcieoe/target/debug/deps/libquick_error-58c7d9f0b0fc8d97.rmeta: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/quick-error-1.2.3/src/lib.rs

/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/quick-error-1.2.3/src/lib.rs:
