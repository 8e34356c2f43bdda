#include "salrt/explainer.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <openssl/evp.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/script.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace salrt {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;  // ordered: messages list the files in the manifest's order, as Python does

// The directory as Python's str(Path(d)) writes it in messages: no trailing '/', no '//' or './' parts.
std::string display_dir(const std::string& dir) {
  if (dir.empty()) return ".";
  std::string out;
  std::istringstream parts(dir);
  std::string part;
  bool absolute = dir[0] == '/';
  while (std::getline(parts, part, '/')) {
    if (part.empty() || part == ".") continue;
    if (!out.empty()) out += '/';
    out += part;
  }
  if (absolute) return "/" + out;
  return out.empty() ? "." : out;
}

std::string join(const std::string& dir, const std::string& name) { return dir == "/" ? "/" + name : dir + "/" + name; }

// One line of a c10::Error or other exception, without a C++ backtrace.
std::string first_line(const std::exception& err) {
  const auto* c10_error = dynamic_cast<const c10::Error*>(&err);
  std::string text = c10_error ? c10_error->what_without_backtrace() : err.what();
  auto end = text.find('\n');
  return end == std::string::npos ? text : text.substr(0, end);
}

// A manifest value as Python's f-string would print it (`missing` when absent, None for null).
std::string py_str(const Json& object, const char* key, const char* missing) {
  const auto found = object.find(key);
  if (found == object.end()) return missing;
  if (found->is_null()) return "None";
  if (found->is_string()) return found->get<std::string>();
  if (found->is_boolean()) return found->get<bool>() ? "True" : "False";
  return found->dump();
}

// torch's name of a dtype, as Python prints it without "torch." (float32, int64, ...).
std::string dtype_name(at::ScalarType type) {
  switch (type) {
    case at::kFloat: return "float32";
    case at::kDouble: return "float64";
    case at::kHalf: return "float16";
    case at::kBFloat16: return "bfloat16";
    case at::kLong: return "int64";
    case at::kInt: return "int32";
    case at::kShort: return "int16";
    case at::kChar: return "int8";
    case at::kByte: return "uint8";
    case at::kBool: return "bool";
    case at::kComplexFloat: return "complex64";
    case at::kComplexDouble: return "complex128";
    default: return c10::toString(type);
  }
}

std::string shape_of(const at::Tensor& t) {
  std::string out = "[";
  for (int64_t d = 0; d < t.dim(); ++d) out += (d ? ", " : "") + std::to_string(t.size(d));
  return out + "]";
}

// C of the "image" input's [N, C, H, W] (manifests before per-model channels wrote 3 there too).
int64_t image_channels(const Json& inputs) {
  for (const auto& io : inputs)
    if (io.at("name") == "image") return io.at("shape").at(1).get<int64_t>();
  throw Error("\"inputs\" has no \"image\"");
}

std::string read_text(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw Error("cannot read " + path + ": " + std::strerror(errno));
  std::ostringstream text;
  text << file.rdbuf();
  return text.str();
}

}  // namespace

namespace {

// SHA-256 of what `feed` passes to its callback, block by block, in lower-case hex.
template <typename Feed>
std::string sha256_hex(Feed feed) {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) throw Error("OpenSSL cannot compute SHA-256");
  feed([&](const char* data, size_t size) { EVP_DigestUpdate(ctx.get(), data, size); });
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  EVP_DigestFinal_ex(ctx.get(), digest, &size);
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < size; ++i) {
    out += hex[digest[i] >> 4];
    out += hex[digest[i] & 15];
  }
  return out;
}

}  // namespace

std::string sha256_file(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw Error("cannot read " + path + ": " + std::strerror(errno));
  std::string out = sha256_hex([&](auto update) {
    std::vector<char> block(1 << 20);
    while (file) {
      file.read(block.data(), static_cast<std::streamsize>(block.size()));
      if (file.gcount() > 0) update(block.data(), static_cast<size_t>(file.gcount()));
    }
  });
  if (file.bad()) throw Error("cannot read " + path + ": " + std::strerror(errno));
  return out;
}

std::string artifact_digest(const std::string& artifact_dir) {
  const std::string dir = display_dir(artifact_dir);
  if (!fs::is_regular_file(join(dir, "manifest.json")))
    throw Error(dir + " is not a salrt artifact directory (no manifest.json)");
  std::vector<std::string> names;
  for (const auto& entry : fs::recursive_directory_iterator(dir))
    if (fs::is_regular_file(entry.path())) names.push_back(fs::relative(entry.path(), dir).generic_string());
  std::sort(names.begin(), names.end());  // bytewise: Python sorts the same names as strings
  std::string lines;
  for (const auto& name : names) lines += name + '\0' + sha256_file(join(dir, name)) + '\n';
  return "sha256:" + sha256_hex([&](auto update) { update(lines.data(), lines.size()); });
}

struct Explainer::Impl {
  std::string dir;  // as messages print it
  std::string file;  // the backend's file, as messages print it
  std::string backend;
  std::string model;
  std::vector<std::string> categories;
  std::array<int64_t, 3> input_shape{};  // C, H, W: the manifest's "image" input
  std::string method = "saliency";
  std::vector<std::string> outputs;  // the graph's, in order: the manifest's "outputs"
  std::string task = "classification";
  // the graph's inputs after image and target, as the manifest describes them: name, the shape of one image's
  // (the manifest's concrete sizes), the value that asks for the default
  struct TaskInput {
    std::string name;
    std::vector<int64_t> row_shape;
    double fill = -1;
    bool integer = false;  // int64 (detection's query), else float32
  };
  int64_t queries = 0;  // a detector's queries (its logits' [N, Q, L]): the query input's bound
  std::vector<TaskInput> task_inputs;
  int64_t images_per_call = 0;  // sampling methods: the most images one call may hold (memory); 0: any
  bool single_image = false;    // the file's manifest entry says "batch": 1 (it checks no shapes)
  // Mutable: running a model does not change the Explainer; both runtimes serialise what they must.
  mutable std::unique_ptr<torch::inductor::AOTIModelPackageLoader> aoti;
  mutable std::optional<torch::jit::Module> torchscript;

  void read_manifest();
  std::string verified_file();
  std::vector<at::Tensor> run(const std::vector<at::Tensor>& inputs) const;
  at::Tensor checked_batch(const at::Tensor& image) const;
  at::Tensor checked_targets(const std::optional<at::Tensor>& target, int64_t n) const;
  std::vector<at::Tensor> checked_task_inputs(const TaskInputs& given, int64_t n) const;
  at::Tensor checked_task_input(const TaskInput& spec, const at::Tensor& given, int64_t n) const;
  void check_box(const at::Tensor& boxes) const;
  void check_regions(const Explanation& result, const at::Tensor& given) const;
  std::vector<at::Tensor> run_in_parts(const std::vector<at::Tensor>& inputs) const;
  Json manifest;
};

void Explainer::Impl::read_manifest() {
  std::string path = join(dir, "manifest.json");
  if (!fs::is_regular_file(path)) throw Error(dir + " is not a salrt artifact directory (no manifest.json)");
  try {
    manifest = Json::parse(read_text(path));
  } catch (const Json::parse_error& err) {
    throw Error(path + " is corrupt: " + err.what());
  }
  if (!manifest.is_object()) throw Error(path + " is corrupt: not a JSON object");
  const auto version = manifest.find("format_version");
  if (version == manifest.end() || !version->is_number_integer() || version->get<int64_t>() != kFormatVersion) {
    throw Error(dir + " was written by salrt " + py_str(manifest, "salrt_version", "?") + " in artifact format " +
                py_str(manifest, "format_version", "None") + "; this salrt " + kVersion + " reads format " +
                std::to_string(kFormatVersion) + ": export it again");
  }
  try {  // the manifest's shape is salrt's own; a mismatch means the file was edited by hand or damaged
    model = manifest.at("model").get<std::string>();
    const auto size = manifest.at("input_size").get<std::vector<int64_t>>();
    if (size.size() != 2) throw Error("\"input_size\" is not [H, W]");
    input_shape = {image_channels(manifest.at("inputs")), size[0], size[1]};
    categories = manifest.at("categories").get<std::vector<std::string>>();
    if (manifest.contains("method")) method = manifest.at("method").at("name").get<std::string>();
    for (const auto& io : manifest.at("outputs")) outputs.push_back(io.at("name").get<std::string>());
    for (const char* name : kRequiredOutputs)
      if (std::find(outputs.begin(), outputs.end(), name) == outputs.end())
        throw Error(std::string("\"outputs\" lacks \"") + name + "\"");
    images_per_call = manifest.value("images_per_call", int64_t{0});
    if (manifest.contains("task")) task = manifest.at("task").at("name").get<std::string>();
    const Json& inputs = manifest.at("inputs");
    for (size_t k = 2; k < inputs.size(); ++k) {  // after image and target
      const auto shape = inputs[k].at("shape");
      std::vector<int64_t> row_shape;
      for (size_t d = 1; d < shape.size(); ++d) row_shape.push_back(shape.at(d).get<int64_t>());
      task_inputs.push_back({inputs[k].at("name").get<std::string>(), row_shape, inputs[k].value("default", -1.0),
                             inputs[k].at("dtype").get<std::string>() == "int64"});
    }
    for (const auto& io : manifest.at("outputs"))
      if (io.at("name") == "logits" && io.at("shape").size() == 3) queries = io.at("shape").at(1).get<int64_t>();
    if (!manifest.at("files").is_object()) throw Error("\"files\" is not an object");
  } catch (const std::exception& err) {
    throw Error(path + " is corrupt: " + err.what());
  }
}

std::string Explainer::Impl::verified_file() {
  const Json& files = manifest.at("files");
  const auto entry = files.find(backend);  // each backend runs the format of the same name
  if (entry == files.end()) {
    std::string present;
    for (const auto& [fmt, _] : files.items()) present += (present.empty() ? "" : ", ") + fmt;
    throw Error(dir + " has no " + backend + " artifact (it has: " + present + ")");
  }
  std::string file, digest;
  try {
    file = entry->at("file").get<std::string>();
    digest = entry->at("sha256").get<std::string>();
  } catch (const Json::exception&) {
    throw Error(join(dir, "manifest.json") + " is corrupt: files." + backend + " lacks \"file\" or \"sha256\"");
  }
  single_image = entry->value("batch", int64_t{0}) == 1;
  // an artifact is code: the manifest may name files inside its directory only (as Python's artifact._inside)
  const fs::path relative(file);
  bool escapes = file.empty() || relative.is_absolute() || file.find('\\') != std::string::npos;
  for (const auto& part : relative) escapes = escapes || part == "..";
  if (escapes)
    throw Error(join(dir, "manifest.json") + " is corrupt: files." + backend + ".file '" + file +
                "' is not a path inside the artifact directory");
  std::string path = join(dir, file);
  std::error_code error;
  const fs::path real = fs::weakly_canonical(path, error), root = fs::weakly_canonical(dir, error);
  const auto [mismatch, _] = std::mismatch(root.begin(), root.end(), real.begin(), real.end());
  if (mismatch != root.end()) throw Error(path + " leads outside " + dir + " (a symbolic link): refused");
  const std::string device = entry->value("device", std::string("cpu"));  // what a package was compiled for
  if (device != "cpu")
    throw Error(path + " is compiled for " + device + ", not cpu: this runtime runs on the CPU; export it again "
                       "with --device cpu");
  if (!fs::is_regular_file(path)) throw Error(path + " is missing");
  if (sha256_file(path) != digest)
    throw Error(path + " does not match its manifest (sha256 mismatch): the file is truncated or was modified; "
                       "export it again");
  return path;
}

Explainer::Explainer(const std::string& artifact_dir, const std::string& backend, size_t aoti_runners,
                     const std::string& digest)
    : impl_(std::make_unique<Impl>()) {
  bool known = false;
  for (const char* b : kBackends) known = known || backend == b;
  if (!known) {
    std::string choices;
    for (const char* b : kBackends) choices += std::string(choices.empty() ? "" : ", ") + b;
    throw Error("unknown backend '" + backend + "'; choose from " + choices);
  }
  if (aoti_runners == 0) throw Error("aoti_runners must be 1 or more");
  impl_->dir = display_dir(artifact_dir);
  impl_->backend = backend;
  if (!digest.empty()) {
    const std::string found = artifact_digest(artifact_dir);
    std::string expected = digest;  // its 64 hex digits alone are the same digest (as in Python)
    if (expected.size() == 64 && expected.find_first_not_of("0123456789abcdefABCDEF") == std::string::npos) {
      std::transform(expected.begin(), expected.end(), expected.begin(), ::tolower);
      expected = "sha256:" + expected;
    }
    if (found != expected)
      throw Error(impl_->dir + " does not have the digest it was pinned to (" + digest + "); it has " + found +
                  ": a file was changed, added or removed since it was reviewed");
  }
  impl_->read_manifest();
  std::string path = impl_->verified_file();
  impl_->file = path;
  if (backend.starts_with("aoti")) {
    try {
      impl_->aoti = std::make_unique<torch::inductor::AOTIModelPackageLoader>(
          path, "model", /*run_single_threaded=*/false, aoti_runners, /*device_index=*/-1);
    } catch (const std::exception& err) {
      throw Error("cannot load " + path + " (compiled by another torch or for another CPU?): " + first_line(err));
    }
  } else {
    try {
      impl_->torchscript = torch::jit::load(path, c10::Device(c10::kCPU));
    } catch (const std::exception& err) {
      throw Error("torch cannot load " + path + ": " + first_line(err));
    }
  }
}

Explainer::~Explainer() = default;
Explainer::Explainer(Explainer&&) noexcept = default;
Explainer& Explainer::operator=(Explainer&&) noexcept = default;

// The image batch as the graph takes it (float32 [N, C, H, W], contiguous, on the CPU), or Error.
at::Tensor Explainer::Impl::checked_batch(const at::Tensor& image) const {
  const auto [channels, height, width] = input_shape;
  std::string expected = model + " takes a float32 [N, " + std::to_string(channels) + ", " + std::to_string(height) +
                         ", " + std::to_string(width) + "] tensor, got ";
  if (!image.defined()) throw Error(expected + "an undefined tensor");
  at::Tensor batch = image.dim() == 3 ? image.unsqueeze(0) : image;
  if (batch.dim() != 4 || batch.size(1) != channels || batch.size(2) != height || batch.size(3) != width ||
      batch.scalar_type() != at::kFloat || batch.size(0) == 0)
    throw Error(expected + dtype_name(batch.scalar_type()) + " " + shape_of(batch));
  batch = batch.to(at::kCPU).contiguous();
  at::Tensor finite = at::isfinite(batch).flatten(1).all(1);
  if (!finite.all().item<bool>()) {
    at::Tensor bad = (~finite).nonzero().flatten();
    std::string list;
    for (int64_t i = 0; i < bad.numel(); ++i) list += (i ? ", " : "") + std::to_string(bad[i].item<int64_t>());
    throw Error(std::string(bad.numel() > 1 ? "images " : "image ") + list +
                " of the batch hold NaN or Inf values; salrt explains finite inputs only");
  }
  return batch;
}

// int64 [n] targets (absent: -1, each image's top class; one value: the same for every image), or Error.
at::Tensor Explainer::Impl::checked_targets(const std::optional<at::Tensor>& target, int64_t n) const {
  if (!target.has_value() || !target->defined()) return at::full({n}, -1, at::TensorOptions().dtype(at::kLong));
  if (!c10::isIntegralType(target->scalar_type(), /*includeBool=*/false))
    throw Error("target must be an integer class index or one per image, got " + dtype_name(target->scalar_type()) +
                " " + shape_of(*target));
  at::Tensor targets = target->to(at::kCPU, at::kLong).reshape(-1);
  if (targets.numel() == 1) targets = targets.expand({n});
  targets = targets.contiguous();
  if (targets.numel() != n)
    throw Error("got " + std::to_string(targets.numel()) + " targets for " + std::to_string(n) + " images");
  const int64_t top = targets.max().item<int64_t>();
  const auto classes = static_cast<int64_t>(categories.size());
  if (top >= classes)
    throw Error("target " + std::to_string(top) + " is out of range: " + model + " has " + std::to_string(classes) +
                " classes (use a negative target for the top class)");
  return targets;
}

// A task's inputs in the graph's order: each given one checked, each left out filled with its default.
std::vector<at::Tensor> Explainer::Impl::checked_task_inputs(const TaskInputs& given, int64_t n) const {
  for (const auto& [name, _] : given) {
    bool known = false;
    for (const auto& spec : task_inputs) known = known || spec.name == name;
    if (!known) {
      std::string taken = "image, target";
      for (const auto& spec : task_inputs) taken += ", " + spec.name;
      throw Error(name + ": " + model + " explains " + task + " and takes no " + name + " (its inputs: " + taken + ")");
    }
  }
  std::vector<at::Tensor> checked;
  for (const auto& spec : task_inputs) {
    const auto found = given.find(spec.name);
    checked.push_back(checked_task_input(spec, found == given.end() ? at::Tensor() : found->second, n));
  }
  return checked;
}

// One task input as float32 [n, row shape]: one image's value for every image, or one per image; finite.
at::Tensor Explainer::Impl::checked_task_input(const TaskInput& spec, const at::Tensor& given, int64_t n) const {
  std::vector<int64_t> shape{n};
  shape.insert(shape.end(), spec.row_shape.begin(), spec.row_shape.end());
  const at::ScalarType dtype = spec.integer ? at::kLong : at::kFloat;
  if (!given.defined()) return at::full(shape, spec.fill, at::TensorOptions().dtype(dtype));
  const at::Tensor row_example = at::empty(spec.row_shape), batch_example = at::empty(shape);
  at::Tensor value = given;
  if (value.sizes() == row_example.sizes()) value = value.unsqueeze(0).expand(shape);
  if (value.sizes() != batch_example.sizes() || value.is_complex() ||
      (spec.integer && !c10::isIntegralType(value.scalar_type(), /*includeBool=*/false)))
    throw Error(spec.name + " must be " + shape_of(row_example) + " or " + shape_of(batch_example) +
                " (one for every image, or one per image), got " + dtype_name(given.scalar_type()) + " " +
                shape_of(given));
  value = value.to(at::kCPU, dtype).contiguous();
  if (!spec.integer && !at::isfinite(value).all().item<bool>()) throw Error(spec.name + " holds NaN or Inf values");
  if (spec.name == "box") check_box(value);
  if (spec.name == "query" && value.max().item<int64_t>() >= queries)
    throw Error("query must be a query's index below " + std::to_string(queries) + " (the model's queries), one or "
                "one per image, got " + std::to_string(value.max().item<int64_t>()));
  return value;
}

// Each image's box inside the input (x0 < x1 <= W, y0 < y1 <= H), or all negative (its top detection).
void Explainer::Impl::check_box(const at::Tensor& boxes) const {
  const int64_t height = input_shape[1], width = input_shape[2];
  for (int64_t i = 0; i < boxes.size(0); ++i) {
    const auto b = boxes[i];
    const double x0 = b[0].item<double>(), y0 = b[1].item<double>(), x1 = b[2].item<double>(), y1 = b[3].item<double>();
    const bool top_detection = x0 < 0 && y0 < 0 && x1 < 0 && y1 < 0;
    const bool inside = x0 >= 0 && y0 >= 0 && x1 <= width && y1 <= height && x0 < x1 && y0 < y1;
    if (!top_detection && !inside) {
      std::ostringstream box;
      box << "[" << x0 << ", " << y0 << ", " << x1 << ", " << y1 << "]";
      throw Error("box " + box.str() + " is not a box inside the model's " + std::to_string(width) + "x" +
                  std::to_string(height) + " input (x0 < x1 <= " + std::to_string(width) + ", y0 < y1 <= " +
                  std::to_string(height) + ", in its pixels)");
    }
  }
}

// Segmentation: an image whose explained region is empty at the logits' grid has a zero map, not an
// explanation: an Error, as Python's Explainer.refusal.
void Explainer::Impl::check_regions(const Explanation& result, const at::Tensor& given) const {
  const at::Tensor used_region = result.output("used_region");
  if (!used_region.defined()) return;
  const at::Tensor empty = (used_region.flatten(1) == 0).all(1);
  if (!empty.any().item<bool>()) return;
  const int64_t i = empty.nonzero()[0][0].item<int64_t>();
  const int64_t label = result.used_target[i].item<int64_t>();
  const std::string image = "image " + std::to_string(i) + ": ";
  if ((given[i] < 0).any().item<bool>())
    throw Error(image + "the model predicts class " + std::to_string(label) + " (" + categories.at(label) +
                ") nowhere, so its region is empty: give a region, or another class");
  throw Error(image + "the region is empty at the model's output grid (" + std::to_string(used_region.size(1)) + "x" +
              std::to_string(used_region.size(2)) + "): nothing to explain; give a region that covers more of the image");
}

// The graph's outputs for the whole batch. Like Python: no autograd recording (the graphs hold their own
// backward pass); the outputs are ordinary tensors, not inference tensors, so callers may use them anywhere. A
// sampling method's graph holds a bounded number of images per call, and the single-image package checks no
// shapes (given two images it explains the first only): larger batches run in parts, as in Python.
std::vector<at::Tensor> Explainer::Impl::run_in_parts(const std::vector<at::Tensor>& inputs) const {
  torch::NoGradGuard no_grad;
  const int64_t n = inputs.front().size(0);
  const int64_t step = single_image ? 1 : (images_per_call > 0 ? images_per_call : n);
  std::vector<std::vector<at::Tensor>> parts;
  for (int64_t start = 0; start < n; start += step) {
    const int64_t count = std::min(step, n - start);
    std::vector<at::Tensor> part;
    for (const auto& input : inputs) part.push_back(input.narrow(0, start, count).contiguous());
    parts.push_back(run(part));
    if (parts.back().size() != outputs.size())
      throw Error(backend + " model returned " + std::to_string(parts.back().size()) + " outputs, expected " +
                  std::to_string(outputs.size()) + " (as manifest.json lists): export it again");
  }
  std::vector<at::Tensor> out = parts.front();
  for (size_t k = 0; parts.size() > 1 && k < out.size(); ++k) {
    std::vector<at::Tensor> pieces;
    for (const auto& part : parts) pieces.push_back(part[k]);
    out[k] = at::cat(pieces);
  }
  return out;
}

Explanation Explainer::explain(const at::Tensor& image, std::optional<at::Tensor> target,
                               const TaskInputs& task_inputs) const {
  const Impl& m = *impl_;
  at::Tensor batch = m.checked_batch(image);
  const int64_t n = batch.size(0);
  std::vector<at::Tensor> inputs{batch, m.checked_targets(target, n)};
  for (auto& input : m.checked_task_inputs(task_inputs, n)) inputs.push_back(std::move(input));
  std::vector<at::Tensor> out = m.run_in_parts(inputs);
  Explanation result;
  for (size_t k = 0; k < out.size(); ++k) result.outputs.emplace_back(m.outputs[k], out[k]);
  result.logits = result.output("logits");
  result.used_target = result.output("used_target");
  result.saliency = result.output("saliency");
  result.grad = result.output("grad");
  result.delta = result.output("delta");
  if (inputs.size() > 2) m.check_regions(result, inputs[2]);
  return result;
}

// A graph that fails on inputs that passed the contract's checks is not the one salrt wrote (a damaged or foreign
// file whose sha256 the manifest was edited to state): an Error naming its file, as Python's runtime says.
std::vector<at::Tensor> Explainer::Impl::run(const std::vector<at::Tensor>& inputs) const {
  try {
    if (aoti) return aoti->run(inputs);
    const c10::IValue result = torchscript->forward(std::vector<c10::IValue>(inputs.begin(), inputs.end()));
    std::vector<at::Tensor> out;
    for (const auto& value : result.toTupleRef().elements()) out.push_back(value.toTensor());
    return out;
  } catch (const c10::OutOfMemoryError&) {
    throw;
  } catch (const c10::Error& err) {
    throw Error(file + " fails on inputs its manifest describes, so it is not the graph salrt exported (" +
                first_line(err) + "): export it again");
  }
}

const std::string& Explainer::model() const { return impl_->model; }
const std::string& Explainer::backend() const { return impl_->backend; }
const std::string& Explainer::method() const { return impl_->method; }
const std::vector<std::string>& Explainer::categories() const { return impl_->categories; }
std::array<int64_t, 2> Explainer::input_size() const { return {impl_->input_shape[1], impl_->input_shape[2]}; }
std::array<int64_t, 3> Explainer::input_shape() const { return impl_->input_shape; }
const std::vector<std::string>& Explainer::output_names() const { return impl_->outputs; }
const std::string& Explainer::task() const { return impl_->task; }
std::vector<std::string> Explainer::task_input_names() const {
  std::vector<std::string> names;
  for (const auto& spec : impl_->task_inputs) names.push_back(spec.name);
  return names;
}

at::Tensor Explanation::output(const std::string& name) const {
  for (const auto& [key, value] : outputs)
    if (key == name) return value;
  return {};
}
const std::string& Explainer::artifact_dir() const { return impl_->dir; }

}  // namespace salrt
