// salrt C++ runtime: runs a salrt artifact directory (written by Python's `salrt.export`) without Python.
//
//   salrt::Explainer explainer("resnet18-art", "aoti");       // checks manifest.json and the file's sha256
//   salrt::Explanation e = explainer.explain(image, target);  // image: float32 [N,3,H,W]; target: int64 [N]
//   e = detector.explain(image, target, {{"box", boxes}});      // a task's inputs by name: float32 [N,4] here
//
// Errors are salrt::Error, with the same messages as the Python package.
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "salrt/generated.h"  // kVersion, kFormatVersion, kBackends, kRequiredOutputs

namespace salrt {

// A problem salrt can explain in one sentence: a bad artifact directory, backend or input.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Per image: logits [N,K], the class explained [N] (int64), the saliency map [N,H,W] in [0,1] and the
// attribution [N,C,H,W] (the input gradient, or the artifact's method's attribution). CPU tensors.
// `outputs` holds every output the graph returns by its name in manifest.json, in its order; the fields
// are those of the tensor contract, read from it by name.
struct Explanation {
  at::Tensor logits;
  at::Tensor used_target;
  at::Tensor saliency;
  at::Tensor grad;
  at::Tensor delta;  // integrated_gradients: the completeness error [N]; undefined for the other methods
  std::vector<std::pair<std::string, at::Tensor>> outputs;
  at::Tensor output(const std::string& name) const;  // undefined when the graph has no such output
};

// A task's inputs by name, as manifest.json's "inputs" lists them after image and target: segmentation's
// "region" (float32 [N,H,W] or one [H,W] for all: 1 in, 0 out, weights between; a negative value: the pixels
// predicted as the class), detection's "box" (float32 [N,4] or one [4]: x0, y0, x1, y1 in input pixels; -1s:
// the top detection), detection's "query" (int64 [N] or one: the query to explain by index; -1: chosen by box,
// class or score). One left out takes the manifest's default for every image.
using TaskInputs = std::map<std::string, at::Tensor>;

class Explainer {
 public:
  // Reads `artifact_dir`/manifest.json (artifact format 1), verifies the backend's file against its sha256
  // and loads it. backend: "aoti" (model.pt2, an AOTInductor CPU package), "aoti_n1" (model_n1.pt2, the
  // frozen single-image package: the fastest on CPU; a batch runs one image at a time) or "torchscript".
  // aoti_runners: model instances the AOTI package holds; calls from several threads run concurrently on
  // up to this many instances and queue for one otherwise (ignored for torchscript).
  // digest: when not empty, the artifact's digest (`salrt info`, artifact_digest below) must be this one,
  // checked before any file is loaded: an artifact is code (model.pt2 holds a shared library).
  explicit Explainer(const std::string& artifact_dir, const std::string& backend = "aoti",
                     size_t aoti_runners = 1, const std::string& digest = "");
  ~Explainer();
  Explainer(Explainer&&) noexcept;
  Explainer& operator=(Explainer&&) noexcept;

  // Saliency of `image` (float32 [N,C,H,W] matching input_shape(), or one [C,H,W] image; finite) for
  // `target` (int64 [N], or one value for all images; a negative value or no target explains each image's
  // top class). Throws salrt::Error on bad inputs. Safe to call from several threads at once.
  // A segmentation or detection artifact also takes `task_inputs` (see TaskInputs; a name it does not take is
  // an Error) and returns what was explained among its outputs (used_region, used_query, used_box, score); an
  // image whose region is empty at the logits' grid is an Error, as in Python.
  Explanation explain(const at::Tensor& image, std::optional<at::Tensor> target = std::nullopt,
                      const TaskInputs& task_inputs = {}) const;

  const std::string& model() const;                   // "resnet18"
  const std::string& backend() const;                 // "aoti", "aoti_n1" or "torchscript"
  const std::string& method() const;                  // "saliency", "smoothgrad", "integrated_gradients", ...
  const std::vector<std::string>& categories() const;  // class names, index = class id
  std::array<int64_t, 2> input_size() const;          // {H, W}
  std::array<int64_t, 3> input_shape() const;         // {C, H, W} of one image
  const std::vector<std::string>& output_names() const;  // the graph's outputs, in order
  const std::string& task() const;                    // "classification", "segmentation" or "detection"
  std::vector<std::string> task_input_names() const;  // the inputs after image and target: {"region"}, ...
  const std::string& artifact_dir() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Lower-case hex SHA-256 of a file (throws salrt::Error if it cannot be read).
std::string sha256_file(const std::string& path);

// "sha256:" + the SHA-256 of "relative/path\0<sha256 of the file>\n" over every file of the directory in path
// order: the digest Python's salrt.artifact.digest computes.
std::string artifact_digest(const std::string& artifact_dir);

}  // namespace salrt
