// salrt_explain: run a salrt artifact on a batch saved by Python, without Python.
//
//   INPUT  : torch.save({"image": float32 [N,C,H,W], "target": int64 [N] (optional), a task's inputs by name
//            (optional: "region" float32 [N,H,W], "box" float32 [N,4])}, INPUT)
//   OUTPUT : a tuple of the graph's outputs (logits, used_target, saliency, grad[, ...]): torch.load(OUTPUT)
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <torch/serialize.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "salrt/explainer.h"

namespace {

const char* kUsage =
    "usage: salrt_explain ARTIFACT_DIR INPUT OUTPUT [--backend aoti|aoti_n1|torchscript] [--repeat R] [--threads T]\n"
    "                     [--callers C] [--digest sha256:...]\n"
    "\n"
    "Explains a batch with a salrt artifact directory (written by `salrt export ... --format aoti,aoti_n1,torchscript`).\n"
    "\n"
    "  ARTIFACT_DIR       the artifact directory (manifest.json, model.pt2 and/or model.pt)\n"
    "  INPUT              torch.save({'image': float32 [N,C,H,W], 'target': int64 [N]}, INPUT); 'target' is\n"
    "                     optional (a negative or absent target explains each image's top class); a segmentation\n"
    "                     artifact also takes 'region' (float32 [N,H,W]), a detection one 'box' (float32 [N,4])\n"
    "  OUTPUT             written as the tuple of the outputs manifest.json lists, in its order (logits,\n"
    "                     used_target, saliency, grad, then e.g. delta for integrated_gradients): torch.load(OUTPUT)\n"
    "  --backend B        aoti (default: model.pt2), aoti_n1 (model_n1.pt2: fastest, one image at a time)\n"
    "                     or torchscript (model.pt)\n"
    "  --repeat R         after 3 warm-up runs, time R runs and print their p50 and p99 latency in ms\n"
    "  --threads T        intra-op threads (at::set_num_threads; default: torch's default)\n"
    "  --callers C        then C threads explain the same batch at once, 3 times each, on one Explainer (AOTI: C\n"
    "                     runners); every result must equal the first exactly, else the exit status is 1\n"
    "  --digest D         refuse the directory unless its digest (salrt info) is D, before loading any file\n"
    "  -h, --help         print this help\n"
    "\n"
    "Errors print one line `error: <message>` on stderr and exit with status 1.\n";

// A message as one line (torch's messages may span several).
std::string one_line(std::string text) {
  std::replace(text.begin(), text.end(), '\n', ' ');
  while (!text.empty() && text.back() == ' ') text.pop_back();
  return text;
}

int fail(const std::string& message) {
  std::cerr << "error: " << one_line(message) << std::endl;
  return 1;
}

long positive_int(const std::string& option, const std::string& text) {
  char* end = nullptr;
  errno = 0;
  long value = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || errno != 0 || value < 1 || value > 1000000)
    throw salrt::Error(option + " takes a positive integer, got '" + text + "'");
  return value;
}

std::vector<char> read_bytes(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw salrt::Error("cannot read " + path + ": " + std::strerror(errno));
  return std::vector<char>(std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>());
}

struct Batch {
  at::Tensor image;
  std::optional<at::Tensor> target;
  salrt::TaskInputs task_inputs;  // every other tensor of the dict: the Explainer refuses a name it does not take
};

Batch read_input(const std::string& path) {
  std::vector<char> bytes = read_bytes(path);
  const std::string how = ": write it with torch.save({'image': tensor, 'target': tensor}, path)";
  c10::IValue value;
  try {
    value = torch::pickle_load(bytes);
  } catch (const std::exception& err) {
    throw salrt::Error(path + " is not a file torch.save wrote (" + one_line(err.what()) + ")" + how);
  }
  if (!value.isGenericDict()) throw salrt::Error(path + " holds a " + value.tagKind() + ", not a dict" + how);
  Batch batch;
  for (const auto& item : value.toGenericDict()) {
    if (!item.key().isString()) continue;
    const std::string& key = item.key().toStringRef();
    if (!item.value().isTensor()) throw salrt::Error(path + ": '" + key + "' is not a tensor" + how);
    if (key == "image") batch.image = item.value().toTensor();
    else if (key == "target") batch.target = item.value().toTensor();
    else batch.task_inputs[key] = item.value().toTensor();
  }
  if (!batch.image.defined()) throw salrt::Error(path + " has no 'image' tensor" + how);
  return batch;
}

void write_output(const std::string& path, const salrt::Explanation& e) {
  // A tuple, not a dict: torch::pickle_save tags a c10::Dict with its key/value types, and the default
  // torch.load (weights_only=True) refuses those tags. A tuple of tensors loads with plain torch.load.
  std::vector<c10::IValue> outputs;  // every output of the graph, in the manifest's order
  for (const auto& [name, tensor] : e.outputs) outputs.emplace_back(tensor);
  auto tuple = c10::ivalue::Tuple::create(std::move(outputs));
  std::vector<char> bytes = torch::pickle_save(c10::IValue(tuple));
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  if (!file) throw salrt::Error("cannot write " + path + ": " + std::strerror(errno));
  file.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  file.close();
  if (!file) throw salrt::Error("cannot write " + path + ": " + std::strerror(errno));
}

double percentile(std::vector<double> sorted, double q) {  // nearest rank, q in (0, 1]
  std::sort(sorted.begin(), sorted.end());
  size_t rank = static_cast<size_t>(std::ceil(q * static_cast<double>(sorted.size())));
  return sorted[std::clamp<size_t>(rank, 1, sorted.size()) - 1];
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  size_t n = values.size();
  return n % 2 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

// Calls explain from `callers` threads at once on one Explainer; throws unless every output of every call
// equals `reference` exactly (the header's thread-safety claim, checked). Returns the number of calls.
size_t check_concurrent_callers(const salrt::Explainer& explainer, const Batch& batch,
                                const salrt::Explanation& reference, int callers) {
  constexpr int kCallsEach = 3;
  std::vector<std::string> problems(callers);
  std::vector<std::thread> threads;
  for (int t = 0; t < callers; ++t) {
    threads.emplace_back([&, t] {
      try {
        for (int i = 0; i < kCallsEach; ++i) {
          salrt::Explanation result = explainer.explain(batch.image, batch.target, batch.task_inputs);
          for (size_t k = 0; k < reference.outputs.size(); ++k)
            if (!at::equal(result.outputs[k].second, reference.outputs[k].second))
              throw salrt::Error("output " + reference.outputs[k].first + " differs from the single caller's");
        }
      } catch (const std::exception& err) {
        problems[t] = err.what();
      }
    });
  }
  for (auto& thread : threads) thread.join();
  for (int t = 0; t < callers; ++t)
    if (!problems[t].empty()) throw salrt::Error("concurrent caller " + std::to_string(t) + ": " + problems[t]);
  return static_cast<size_t>(callers) * kCallsEach;
}

int run(int argc, char** argv) {
  std::vector<std::string> positional;
  std::string backend = "aoti", digest;
  long repeat = 0, threads = 0, callers = 0;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      std::cout << kUsage;
      return 0;
    }
    if (arg.rfind("--", 0) == 0) {
      std::string name = arg, value;
      auto eq = arg.find('=');
      if (eq != std::string::npos) {
        name = arg.substr(0, eq);
        value = arg.substr(eq + 1);
      } else if (name == "--backend" || name == "--repeat" || name == "--threads" || name == "--callers" ||
                 name == "--digest") {
        if (i + 1 >= argc) throw salrt::Error(name + " needs a value (see --help)");
        value = argv[++i];
      }
      if (name == "--backend") backend = value;
      else if (name == "--repeat") repeat = positive_int(name, value);
      else if (name == "--threads") threads = positive_int(name, value);
      else if (name == "--callers") callers = positive_int(name, value);
      else if (name == "--digest") digest = value;
      else throw salrt::Error("unknown option " + name + " (see --help)");
      continue;
    }
    positional.push_back(arg);
  }
  if (positional.size() != 3)
    throw salrt::Error("expected ARTIFACT_DIR INPUT OUTPUT, got " + std::to_string(positional.size()) +
                       " argument" + (positional.size() == 1 ? "" : "s") + " (see --help)");
  const std::string &dir = positional[0], &input = positional[1], &output = positional[2];
  if (threads > 0) at::set_num_threads(static_cast<int>(threads));

  salrt::Explainer explainer(dir, backend, static_cast<size_t>(std::max(1L, callers)), digest);
  Batch batch = read_input(input);
  salrt::Explanation result = explainer.explain(batch.image, batch.target, batch.task_inputs);
  if (repeat > 0) {
    for (int i = 0; i < 2; ++i) explainer.explain(batch.image, batch.target, batch.task_inputs);  // 3 warm-up runs in all
    std::vector<double> ms;
    for (long i = 0; i < repeat; ++i) {
      auto start = std::chrono::steady_clock::now();
      result = explainer.explain(batch.image, batch.target, batch.task_inputs);
      ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
    }
    std::printf("%s %s N=%lld threads=%d: p50 %.2f ms, p99 %.2f ms over %ld runs\n", explainer.model().c_str(),
                backend.c_str(), static_cast<long long>(batch.image.dim() == 4 ? batch.image.size(0) : 1),
                at::get_num_threads(), median(ms), percentile(ms, 0.99), repeat);
  }
  if (callers > 0) {
    size_t calls = check_concurrent_callers(explainer, batch, result, static_cast<int>(callers));
    std::printf("%ld concurrent callers: %zu calls, every result identical to the first\n", callers, calls);
  }
  write_output(output, result);
  const at::Tensor score = result.output("score");  // a task's explained scalar; a classifier's is the logit
  for (int64_t i = 0; i < result.used_target.numel(); ++i) {
    int64_t k = result.used_target[i].item<int64_t>();
    const auto& names = explainer.categories();
    std::printf("image %lld: class %lld (%s), %s %.4f\n", static_cast<long long>(i), static_cast<long long>(k),
                k >= 0 && k < static_cast<int64_t>(names.size()) ? names[k].c_str() : "?",
                score.defined() ? "score" : "logit", (score.defined() ? score[i] : result.logits[i][k]).item<double>());
  }
  std::printf("wrote %s\n", output.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const c10::Error& err) {
    return fail(err.what_without_backtrace());
  } catch (const std::exception& err) {
    return fail(err.what());
  }
}
