/work/main/rust/pcieoe/target/debug/deps/pcieoe-d687496e0cb4bac4.d: src/lib.rs src/ethertype.rs

/work/main/rust/pcieoe/target/debug/deps/pcieoe-d687496e0cb4bac4: src/lib.rs src/ethertype.rs

src/lib.rs:
src/ethertype.rs:
