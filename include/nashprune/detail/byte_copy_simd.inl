// nashprune/detail/byte_copy_simd.inl — the streaming block loop, compiled once
// per instruction set: byte_copy.hpp includes it inside a target region and a
// namespace that defines stream_64(to, from) (one 64-byte non-temporal block;
// `to` aligned as that instruction set's stores need). No include guard on
// purpose; not a header to include directly.

/// Copies the whole 64-byte blocks of n bytes; returns the bytes copied.
inline std::size_t stream_blocks(std::byte* to, const std::byte* from, std::size_t n) {
  std::size_t i = 0;
  for (; i + 64 <= n; i += 64) stream_64(to + i, from + i);
  return i;
}
