/work/main/rust/pcieoe/target/debug/deps/bit_vec-e596ca2e8bd60576.d: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/bit-vec-0.10.1/src/lib.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/bit-vec-0.10.1/src/util.rs

/work/main/rust/pcieoe/target/debug/deps/libbit_vec-e596ca2e8bd60576.rlib: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/bit-vec-0.10.1/src/lib.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/bit-vec-0.10.1/src/util.rs

/work/main/rust/pcieoe/target/debug/deps/libbit_vec-e596ca2e8bd60576.rmeta: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/bit-vec-0.10.1/src/lib.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/bit-vec-0.10.1/src/util.rs

/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/bit-vec-0.10.1/src/lib.rs:
/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/bit-vec-0.10.1/src/util.rs:
