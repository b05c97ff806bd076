/work/main/rust/pcieoe/target/debug/deps/bit_set-da45ae0345d08725.d: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/bit-set-0.11.1/src/lib.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/bit-set-0.11.1/src/iter.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/bit-set-0.11.1/src/set.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/bit-set-0.11.1/src/util.rs

/work/main/rust/pcieoe/target/debug/deps/libbit_set-da45ae0345d08725.rlib: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/bit-set-0.11.1/src/lib.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/bit-set-0.11.1/src/iter.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/bit-set-0.11.1/src/set.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/bit-set-0.11.1/src/util.rs

/work/main/rust/pcieoe/target/debug/deps/libbit_set-da45ae0345d08725.rmeta: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/bit-set-0.11.1/src/lib.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/bit-set-0.11.1/src/iter.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/bit-set-0.11.1/src/set.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/bit-set-0.11.1/src/util.rs

/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/bit-set-0.11.1/src/lib.rs:
/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/bit-set-0.11.1/src/iter.rs:
/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/bit-set-0.11.1/src/set.rs:
/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/bit-set-0.11.1/src/util.rs:
