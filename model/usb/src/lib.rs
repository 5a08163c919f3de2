//! USB chapter 9 model: setup packets, descriptors (views, reprs, builders, raw bytes)
