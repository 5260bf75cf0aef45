// core/safetensors.cpp -- safetensors header validation, tensor (de)serialisation.
// Hand-written (no Debian package); JSON through nlohmann-json, the file through mmap.
#include "core/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "core/errors.h"

namespace lmforge {

namespace {
constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // the reference implementation's limit

struct DtypeInfo {
  const char* name;
  torch::ScalarType type;
  size_t size;
};
const DtypeInfo kDtypes[] = {
    {"F64", torch::kDouble, 8}, {"F32", torch::kFloat, 4},  {"F16", torch::kHalf, 2},
    {"BF16", torch::kBFloat16, 2}, {"I64", torch::kLong, 8}, {"I32", torch::kInt, 4},
    {"I16", torch::kShort, 2},  {"I8", torch::kChar, 1},    {"U8", torch::kByte, 1},
    {"BOOL", torch::kBool, 1},
};

const DtypeInfo* dtype_by_name(const std::string& name) {
  for (const auto& d : kDtypes)
    if (name == d.name) return &d;
  return nullptr;
}
const DtypeInfo& dtype_of(torch::ScalarType t) {
  for (const auto& d : kDtypes)
    if (d.type == t) return d;
  throw std::runtime_error(std::string("safetensors: unsupported dtype ") + c10::toString(t));
}

}  // namespace

void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata) {
  std::vector<std::pair<std::string, torch::Tensor>> sorted;
  for (const auto& [name, t] : tensors) sorted.emplace_back(name, t.detach().to(torch::kCPU).contiguous());
  std::stable_sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) {
    size_t sa = dtype_of(a.second.scalar_type()).size, sb = dtype_of(b.second.scalar_type()).size;
    return sa != sb ? sa > sb : a.first < b.first;
  });
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& [name, t] : sorted) {
    if (header.contains(name)) throw std::runtime_error("safetensors: duplicate tensor name " + name);
    uint64_t nbytes = t.numel() * dtype_of(t.scalar_type()).size;
    header[name] = {{"dtype", dtype_of(t.scalar_type()).name},
                    {"shape", t.sizes().vec()},
                    {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // the data buffer starts 8-byte aligned
  uint64_t header_len = text.size();

  std::string tmp = path + ".tmp." + std::to_string(getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) throw std::runtime_error("cannot create " + tmp + ": " + std::strerror(errno));
  auto write_all = [&](const void* p, size_t n) {
    const char* c = static_cast<const char*>(p);
    while (n > 0) {
      ssize_t w = ::write(fd, c, n);
      if (w < 0) {
        ::close(fd);
        ::unlink(tmp.c_str());
        throw std::runtime_error("cannot write " + tmp + ": " + std::strerror(errno));
      }
      c += w;
      n -= static_cast<size_t>(w);
    }
  };
  unsigned char len_le[8];
  for (int i = 0; i < 8; ++i) len_le[i] = static_cast<unsigned char>(header_len >> (8 * i));
  write_all(len_le, 8);
  write_all(text.data(), text.size());
  for (const auto& [name, t] : sorted) write_all(t.data_ptr(), t.numel() * t.element_size());
  if (::fsync(fd) != 0 || ::close(fd) != 0) throw std::runtime_error("cannot flush " + tmp);
  std::filesystem::rename(tmp, path);
}

struct SafetensorsFile::Mapping {  // a read-only mmap of a whole file
  void* data = MAP_FAILED;
  size_t size = 0;
  ~Mapping() {
    if (data != MAP_FAILED) munmap(data, size);
  }
};

struct SafetensorsFile::Entry {
  const DtypeInfo* dtype;
  std::vector<int64_t> shape;
  uint64_t begin, end;  // byte span within the data buffer
  const unsigned char* data;
};

SafetensorsFile::~SafetensorsFile() = default;
SafetensorsFile::SafetensorsFile(SafetensorsFile&&) noexcept = default;

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path), mapping_(std::make_shared<Mapping>()) {
  auto fail = [&](const std::string& what) { return InputError(path + ": " + what); };
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) throw fail(std::string("cannot open: ") + std::strerror(errno));
  struct stat st{};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw fail("not a regular file");
  }
  Mapping& map = *mapping_;
  map.size = static_cast<size_t>(st.st_size);
  if (map.size > 0) map.data = ::mmap(nullptr, map.size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map.size < 8) throw fail("too short for a safetensors header (" + std::to_string(map.size) + " bytes)");
  if (map.data == MAP_FAILED) throw fail("cannot map the file");
  const auto* bytes = static_cast<const unsigned char*>(map.data);
  uint64_t header_len = 0;
  for (int i = 0; i < 8; ++i) header_len |= static_cast<uint64_t>(bytes[i]) << (8 * i);
  if (header_len > kMaxHeaderBytes) throw fail("header length " + std::to_string(header_len) + " exceeds 100 MB");
  if (header_len > map.size - 8)
    throw fail("header length " + std::to_string(header_len) + " runs past the end of the file (" +
               std::to_string(map.size) + " bytes)");
  if (header_len == 0 || bytes[8] != '{') throw fail("header does not start with '{'");

  std::string text(reinterpret_cast<const char*>(bytes + 8), header_len);
  std::set<std::string> seen;
  std::string duplicate;
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(text, [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
      if (depth == 1 && event == nlohmann::json::parse_event_t::key && !seen.insert(parsed.get<std::string>()).second)
        duplicate = parsed.get<std::string>();
      return true;
    });
  } catch (const nlohmann::json::exception& e) {
    throw fail(std::string("header is not valid JSON: ") + e.what());
  }
  if (!duplicate.empty()) throw fail("tensor '" + duplicate + "' appears twice in the header");
  if (!header.is_object()) throw fail("header is not a JSON object");

  uint64_t buffer_size = map.size - 8 - header_len;
  const unsigned char* buffer = bytes + 8 + header_len;
  for (const auto& [name, info] : header.items()) {
    if (name == "__metadata__") {
      if (!info.is_object()) throw fail("__metadata__ is not an object");
      for (const auto& [k, v] : info.items()) {
        if (!v.is_string()) throw fail("__metadata__ value '" + k + "' is not a string");
        metadata_[k] = v.get<std::string>();
      }
      continue;
    }
    auto bad = [&](const std::string& what) { return fail("tensor '" + name + "': " + what); };
    if (!info.is_object() || !info.contains("dtype") || !info.contains("shape") || !info.contains("data_offsets"))
      throw bad("needs dtype, shape and data_offsets");
    if (!info["dtype"].is_string()) throw bad("dtype is not a string");
    const DtypeInfo* dtype = dtype_by_name(info["dtype"].get<std::string>());
    if (!dtype) throw bad("unknown dtype '" + info["dtype"].get<std::string>() + "'");
    const auto& shape_json = info["shape"];
    const auto& offsets = info["data_offsets"];
    if (!shape_json.is_array()) throw bad("shape is not a list");
    std::vector<int64_t> shape;
    uint64_t numel = 1;
    for (const auto& d : shape_json) {
      if (!d.is_number_unsigned()) throw bad("shape holds a non-integer or negative dimension");
      uint64_t dim = d.get<uint64_t>();
      if (dim != 0 && numel > (1ull << 62) / dim) throw bad("shape overflows");
      numel *= dim;
      shape.push_back(static_cast<int64_t>(dim));
    }
    if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
        !offsets[1].is_number_unsigned())
      throw bad("data_offsets must be two non-negative integers");
    uint64_t begin = offsets[0].get<uint64_t>(), end = offsets[1].get<uint64_t>();
    if (end < begin || end > buffer_size) throw bad("data_offsets [" + std::to_string(begin) + ", " +
                                                    std::to_string(end) + "] fall outside the data buffer of " +
                                                    std::to_string(buffer_size) + " bytes");
    if (numel * dtype->size != end - begin)
      throw bad("shape x dtype size is " + std::to_string(numel * dtype->size) + " bytes but data_offsets span " +
                std::to_string(end - begin));
    names_.push_back(name);
    entries_[name] = Entry{dtype, shape, begin, end, buffer + begin};
  }
  std::vector<std::pair<const std::string*, const Entry*>> by_offset;
  for (const auto& [name, e] : entries_) by_offset.emplace_back(&name, &e);
  std::sort(by_offset.begin(), by_offset.end(), [](const auto& a, const auto& b) {
    return a.second->begin != b.second->begin ? a.second->begin < b.second->begin : a.second->end < b.second->end;
  });
  uint64_t expected = 0;
  for (const auto& [name, e] : by_offset) {
    if (e->begin != expected)
      throw fail("tensor '" + *name + "' starts at byte " + std::to_string(e->begin) +
                 " but the previous tensor ends at " + std::to_string(expected) +
                 (e->begin < expected ? " (overlap)" : " (hole)"));
    expected = e->end;
  }
  if (expected != buffer_size)
    throw fail("tensors cover " + std::to_string(expected) + " of " + std::to_string(buffer_size) + " data bytes");
}

bool SafetensorsFile::contains(const std::string& name) const { return entries_.count(name) > 0; }

static const SafetensorsFile::Entry& entry_of(const std::map<std::string, SafetensorsFile::Entry>& entries,
                                              const std::string& path, const std::string& name) {
  auto it = entries.find(name);
  if (it == entries.end()) throw InputError(path + ": no tensor '" + name + "'");
  return it->second;
}

std::vector<int64_t> SafetensorsFile::shape(const std::string& name) const {
  return entry_of(entries_, path_, name).shape;
}

torch::ScalarType SafetensorsFile::dtype(const std::string& name) const {
  return entry_of(entries_, path_, name).dtype->type;
}

torch::Tensor SafetensorsFile::view(const std::string& name) const {
  const Entry& e = entry_of(entries_, path_, name);
  auto options = torch::dtype(e.dtype->type);
  if (e.end == e.begin) return torch::empty(e.shape, options);
  if (reinterpret_cast<uintptr_t>(e.data) % e.dtype->size != 0) {  // a misaligned writer: copy out
    auto t = torch::empty(e.shape, options);
    std::memcpy(t.data_ptr(), e.data, e.end - e.begin);
    return t;
  }
  auto keep_alive = mapping_;
  return torch::from_blob(const_cast<unsigned char*>(e.data), e.shape, [keep_alive](void*) {}, options);
}

NamedTensors load_safetensors(const std::string& path, std::map<std::string, std::string>* metadata) {
  SafetensorsFile file(path);
  if (metadata) *metadata = file.metadata();
  NamedTensors out;
  for (const auto& name : file.names()) out.emplace_back(name, file.view(name).clone());
  return out;
}

}  // namespace lmforge
