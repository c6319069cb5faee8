// MMDAQ_CHECK(cond, parts...): TORCH_CHECK with the message built without iostream number
// formatting. With some torch builds, formatting an integer or a float through std::ostream
// inside the extension (what TORCH_CHECK's c10::str does) crashes the process instead of
// raising; std::to_string goes through snprintf and does not.
#pragma once

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <string>
#include <type_traits>

namespace mmdaq {
namespace detail {

inline void append(std::string& s, const char* v) { s += v; }
inline void append(std::string& s, const std::string& v) { s += v; }
inline void append(std::string& s, c10::ScalarType v) { s += c10::toString(v); }
inline void append(std::string& s, const c10::Device& v) { s += v.str(); }
inline void append(std::string& s, c10::IntArrayRef v) {
  s += '[';
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  s += ']';
}
template <typename T, typename = std::enable_if_t<std::is_arithmetic<T>::value>>
inline void append(std::string& s, T v) {
  s += std::to_string(v);
}

}  // namespace detail

template <typename... Args>
std::string message(const Args&... args) {
  std::string s;
  (detail::append(s, args), ...);
  return s;
}

}  // namespace mmdaq

#define MMDAQ_CHECK(cond, ...) TORCH_CHECK(cond, ::mmdaq::message(__VA_ARGS__))
