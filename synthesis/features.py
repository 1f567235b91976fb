"""Named layers of any unmodified ``nn.Module``: list them, read them, and stop the forward pass early.

A layer is named by

* a module's qualified name (``conv1``, ``layer1``, ``layer1.0.conv2``; containers included: the
  layer is the container's output), or
* a traced operation's node name (``add_3``, ``flatten``, ``relu_1``) for work done in ``forward``
  by functions rather than modules; only for models that ``torch.fx`` can trace.

The forward pass is **truncated** after the deepest requested layer: the layers above it cost
nothing. For fx-traceable models this is a rebuilt graph that ends at the deepest layer; for other
models, forward hooks capture the outputs and abort the pass once the deepest layer has run.

The **fake ReLU** (docs/science.md §1) applies the ReLU in the forward pass and the identity in the
backward pass at the matched layer, so units that the initial noise leaves at zero still get a
gradient. It applies where the layer's output is a ReLU's output (a ReLU module or function, or a
block whose last operation is one); :attr:`LayerInfo.relu` says where. It is switched on per batch
element (``fake_relu_mask``), because elements of one batch may match different layers.

Modules are put in eval mode, their parameters stop requiring gradients, and in-place operations
are switched off (``inplace=False``): an in-place ReLU would otherwise overwrite a captured layer.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from torch import nn
from torch.nn import functional as F

_RELU_FUNCTIONS = {torch.relu, torch.relu_, F.relu}
_RELU_METHODS = {"relu", "relu_"}


class LayerError(ValueError):
    """A layer name is unknown or unusable; the message lists the valid names."""


@dataclass(frozen=True)
class LayerInfo:
    """One readable layer. ``shape`` is the output shape of one example (no batch dimension)."""

    name: str
    kind: str  # "module" or "node"
    op: str  # module class name, or the traced function/method name
    shape: tuple[int, ...]
    relu: bool  # the output is a ReLU's: the fake ReLU applies here
    calls: int = 1  # modules called several times per forward are read at their last call


class FakeReLUGate(nn.Module):
    """Returns ``post`` (= relu(pre)) unchanged, with an identity gradient for masked batch elements.

    ``pre + (post - pre).detach()`` equals ``post`` exactly in floating point (for post = relu(pre))
    and has gradient 1 with respect to ``pre``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.mask: torch.Tensor | None = None

    def forward(self, pre: torch.Tensor, post: torch.Tensor) -> torch.Tensor:
        mask = self.mask
        if mask is None or not torch.is_grad_enabled():
            return post
        straight = pre + (post - pre).detach()
        if bool(mask.all()):
            return straight
        if not bool(mask.any()):
            return post
        return torch.where(mask.view(-1, *([1] * (post.dim() - 1))), straight, post)


class _Stop(Exception):
    """Raised by a hook once the deepest requested layer has run (hook-based truncation)."""


def _no_inplace(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(getattr(m, "inplace", None), bool):
            m.inplace = False  # type: ignore[assignment]


def _freeze(module: nn.Module) -> None:
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    _no_inplace(module)


def _scope_names(node: fx.Node) -> list[str]:
    """Qualified names of the modules a traced node ran inside (outermost first)."""
    stack = node.meta.get("nn_module_stack") or {}
    names = []
    for key, value in stack.items():
        if isinstance(value, tuple) and value and isinstance(value[0], str):
            names.append(value[0])
        else:
            names.append(str(key).split("@")[0])
    return names


def _container_calls(nodes: list[fx.Node], qual: str) -> int:
    """How many times a container module ran: fx keys repeated calls as ``name@1``, ``name@2``..."""
    keys = set()
    for n in nodes:
        for key, value in (n.meta.get("nn_module_stack") or {}).items():
            owner = value[0] if isinstance(value, tuple) and value and isinstance(value[0], str) else str(key).split("@")[0]
            if owner == qual:
                keys.add(str(key))
    return max(1, len(keys))


def _op_name(node: fx.Node, root: nn.Module) -> str:
    if node.op == "call_module":
        return type(root.get_submodule(str(node.target))).__name__
    if node.op == "call_method":
        return str(node.target)
    return getattr(node.target, "__name__", str(node.target))


def _is_relu_node(node: fx.Node, root: nn.Module) -> bool:
    if node.op == "call_module":
        return type(root.get_submodule(str(node.target))) is nn.ReLU
    if node.op == "call_function":
        return node.target in _RELU_FUNCTIONS
    if node.op == "call_method":
        return node.target in _RELU_METHODS
    return False


class _ShapeRecorder(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.shapes: dict[str, tuple[int, ...]] = {}

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        if isinstance(out, torch.Tensor):
            self.shapes[n.name] = tuple(out.shape[1:])
        return out


def _trace(module: nn.Module) -> fx.GraphModule | None:
    try:
        return fx.symbolic_trace(module)
    except Exception:  # any tracing failure means: fall back to hooks
        return None


class _Access:
    """The layer table of one model, by tracing (``gm`` set) or by probing with hooks."""

    def __init__(self, module: nn.Module, example: torch.Tensor, prefix: str = "") -> None:
        _freeze(module)
        self.module = module
        self.prefix = prefix
        self.gm = _trace(module)
        # name -> (position in execution order, LayerInfo); for fx also name -> node
        self.table: dict[str, tuple[int, LayerInfo]] = {}
        self.nodes: dict[str, fx.Node] = {}
        self.relu_input: dict[str, str] = {}  # fx: layer name -> name of the node feeding its ReLU
        with torch.no_grad():
            if self.gm is not None:
                self._build_fx(example)
            else:
                self._build_hooks(example)

    # -- fx ---------------------------------------------------------------------------------
    def _build_fx(self, example: torch.Tensor) -> None:
        assert self.gm is not None
        rec = _ShapeRecorder(self.gm)
        rec.run(example)
        order = [n for n in self.gm.graph.nodes if n.op in ("call_module", "call_function", "call_method")]
        pos = {n: i for i, n in enumerate(order)}
        module_calls: dict[str, list[fx.Node]] = {}
        for n in order:
            scopes = set(_scope_names(n))
            if n.op == "call_module":
                scopes.add(str(n.target))
            for q in scopes:
                module_calls.setdefault(q, []).append(n)
        leaf_calls: dict[str, int] = {}
        for n in order:
            if n.op == "call_module":
                leaf_calls[str(n.target)] = leaf_calls.get(str(n.target), 0) + 1
        for qual, _ in self.module.named_modules():
            if not qual or qual not in module_calls:
                continue
            last = module_calls[qual][-1]
            if last.name not in rec.shapes:
                continue
            calls = leaf_calls.get(qual) or _container_calls(module_calls[qual], qual)
            info = LayerInfo(qual, "module", type(self.module.get_submodule(qual)).__name__, rec.shapes[last.name], _is_relu_node(last, self.module), calls)
            self.table[qual] = (pos[last], info)
            self.nodes[qual] = last
        single_leaf = {q for q, c in leaf_calls.items() if c == 1}
        for n in order:
            if n.name in self.table or n.name not in rec.shapes:
                continue
            if n.op == "call_module" and str(n.target) in single_leaf:
                continue  # already listed under its module name
            self.table[n.name] = (pos[n], LayerInfo(n.name, "node", _op_name(n, self.module), rec.shapes[n.name], _is_relu_node(n, self.module)))
            self.nodes[n.name] = n

    # -- hooks --------------------------------------------------------------------------------
    def _build_hooks(self, example: torch.Tensor) -> None:
        calls: list[str] = []
        outputs: dict[str, Any] = {}
        last_relu: dict[str, Any] = {"out": None}
        relu_out: dict[str, bool] = {}
        handles = []

        def hook(name: str, mod: nn.Module) -> Any:
            def fn(_m: nn.Module, _inp: Any, out: Any) -> None:
                calls.append(name)
                outputs[name] = out
                if type(mod) is nn.ReLU:
                    last_relu["out"] = out
                relu_out[name] = out is last_relu["out"] and isinstance(out, torch.Tensor)

            return fn

        for qual, mod in self.module.named_modules():
            if qual:
                handles.append(mod.register_forward_hook(hook(qual, mod)))
        try:
            self.module(example)
        finally:
            for h in handles:
                h.remove()
        for qual in dict.fromkeys(calls):
            out = outputs[qual]
            if not isinstance(out, torch.Tensor):
                continue
            last_pos = len(calls) - 1 - calls[::-1].index(qual)
            n_calls = calls.count(qual)
            info = LayerInfo(qual, "module", type(self.module.get_submodule(qual)).__name__, tuple(out.shape[1:]), relu_out.get(qual, False), n_calls)
            self.table[qual] = (last_pos, info)

    # -- names ---------------------------------------------------------------------------------
    def public(self, internal: str) -> str:
        for p in (self.prefix, self.prefix.replace(".", "_")):
            if p and internal.startswith(p) and len(internal) > len(p):
                return internal[len(p):]
        return internal

    def resolve(self, name: str) -> str:
        candidates = [name]
        if self.prefix:
            candidates += [self.prefix + name, self.prefix.replace(".", "_") + name]
        for c in candidates:
            if c in self.table:
                return c
        valid = [self.public(k) for k in self.ordered()]
        close = difflib.get_close_matches(name, valid, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        how = "" if self.gm is not None else " (this model cannot be traced by torch.fx, so only module names are available)"
        raise LayerError(f"unknown layer {name!r}.{hint} Valid layers{how}: {', '.join(valid)}")

    def ordered(self) -> list[str]:
        return sorted(self.table, key=lambda k: self.table[k][0])

    def infos(self) -> list[LayerInfo]:
        out = []
        for k in self.ordered():
            info = self.table[k][1]
            out.append(LayerInfo(self.public(k), info.kind, info.op, info.shape, info.relu, info.calls))
        return out


def list_layers(module: nn.Module, example: torch.Tensor, prefix: str = "") -> list[LayerInfo]:
    """Every readable layer of ``module`` in execution order, with output shapes for ``example``.

    ``example`` is one input batch (batch size 1 is enough). ``prefix`` is stripped from names
    (see :attr:`synthesis.models.registry.LoadedModel.layer_prefix`).
    """
    return _Access(module, example, prefix).infos()


class FeatureExtractor:
    """Reads ``layers`` of ``module`` in one truncated forward pass.

    ``extractor(x)`` returns ``{layer name: activation}`` (names as given). With ``fake_relu=True``
    the fake ReLU is available at the layers whose :attr:`LayerInfo.relu` is true; which batch
    elements use it is passed per call as ``fake_relu_mask`` (``{layer: bool tensor [B]}``).
    Extractors for subsets of the layers (:meth:`subset`) share the model and truncate earlier.
    """

    def __init__(
        self,
        module: nn.Module,
        layers: Sequence[str],
        example: torch.Tensor,
        *,
        prefix: str = "",
        fake_relu: bool = False,
        _access: _Access | None = None,
    ) -> None:
        if not layers:
            raise LayerError("no layers requested")
        self.access = _access or _Access(module, example, prefix)
        internal = {name: self.access.resolve(name) for name in layers}
        self.layers: tuple[str, ...] = tuple(sorted(dict.fromkeys(layers), key=lambda n: self.access.table[internal[n]][0]))
        self._internal = internal
        self.fake_relu = fake_relu
        self.info: dict[str, LayerInfo] = {n: self.access.table[internal[n]][1] for n in self.layers}
        self.fake_relu_layers: frozenset[str] = frozenset(n for n in self.layers if fake_relu and self.info[n].relu)
        # One gate per distinct layer output: two names (a block and its last ReLU) can share one.
        self._gate_of: dict[str, str] = {n: self._output_key(n) for n in self.fake_relu_layers}
        self.gates: dict[str, FakeReLUGate] = {k: FakeReLUGate() for k in self._gate_of.values()}
        self._subsets: dict[frozenset[str], FeatureExtractor] = {}
        self._device: torch.device | str | None = None
        self._memory_format: torch.memory_format | None = None
        self._compiled = False
        self.runner: nn.Module
        if self.access.gm is not None:
            self.runner = self._build_graph()
        else:
            self.runner = self.access.module

    def _output_key(self, name: str) -> str:
        internal = self._internal[name]
        return self.access.nodes[internal].name if self.access.gm is not None else internal

    @property
    def deepest(self) -> str:
        return self.layers[-1]

    def shape(self, layer: str) -> tuple[int, ...]:
        return self.info[layer].shape

    def subset(self, layers: Sequence[str]) -> FeatureExtractor:
        """An extractor for some of these layers, truncated at the deepest of them (cached)."""
        key = frozenset(layers)
        if key == frozenset(self.layers):
            return self
        if key not in self._subsets:
            sub = FeatureExtractor(self.access.module, sorted(key), torch.empty(0), fake_relu=self.fake_relu, _access=self.access)
            if self._device is not None:
                sub.to(self._device, self._memory_format)
            if self._compiled:
                sub.compile()
            self._subsets[key] = sub
        return self._subsets[key]

    def _build_graph(self) -> fx.GraphModule:
        gm = self.access.gm
        assert gm is not None
        gate_at = {self.access.nodes[self._internal[n]]: self._gate_of[n] for n in self._gate_of}
        deepest = self.access.nodes[self._internal[self.deepest]]
        graph = fx.Graph()
        env: dict[fx.Node, fx.Node] = {}
        attrs: dict[str, Any] = {}
        for node in gm.graph.nodes:
            if node.op == "output":
                break
            new = graph.node_copy(node, lambda n: env[n])
            if new.op == "call_function" and new.kwargs.get("inplace") is True:
                new.kwargs = {**new.kwargs, "inplace": False}
            if new.op == "call_method" and str(new.target).endswith("_") and new.target in _RELU_METHODS:
                new.target = "relu"
            if new.op == "call_module":
                attrs[str(new.target)] = gm.get_submodule(str(new.target))
            elif new.op == "get_attr":
                attrs[str(new.target)] = _get_attr(gm, str(new.target))
            env[node] = new
            if node in gate_at:
                gate_name = f"_fake_relu_{len(attrs)}"
                attrs[gate_name] = self.gates[gate_at[node]]
                pre = env[node.args[0]] if isinstance(node.args[0], fx.Node) else None
                if pre is None:
                    raise LayerError(f"layer {node.name!r}: cannot find the ReLU's input for the fake ReLU")
                env[node] = graph.call_module(gate_name, (pre, new))
            if node is deepest:
                break
        graph.output(tuple(env[self.access.nodes[self._internal[n]]] for n in self.layers))
        return fx.GraphModule(attrs, graph)

    def to(self, device: torch.device | str, memory_format: torch.memory_format | None = None) -> FeatureExtractor:
        self._device, self._memory_format = device, memory_format
        self.runner = self.runner.to(device)
        if memory_format is not None:
            self.runner = self.runner.to(memory_format=memory_format)
        if self.access.gm is None:
            self.access.module.to(device)
        for sub in self._subsets.values():
            sub.to(device, memory_format)
        return self

    def compile(self) -> FeatureExtractor:
        """Wrap the truncated graph in ``torch.compile`` (dynamic batch size: batches shrink as
        examples finish)."""
        self.runner = torch.compile(self.runner, dynamic=True)  # type: ignore[assignment]
        self._compiled = True
        return self

    def __call__(self, x: torch.Tensor, fake_relu_mask: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        for gate in self.gates.values():
            gate.mask = None
        for name, key in self._gate_of.items():
            mask = None if fake_relu_mask is None else fake_relu_mask.get(name)
            if mask is not None:
                gate = self.gates[key]
                gate.mask = mask if gate.mask is None else (gate.mask | mask)
        try:
            if self.access.gm is not None:
                outs = self.runner(x)
                return dict(zip(self.layers, outs, strict=True))
            return self._run_hooks(x)
        finally:
            for gate in self.gates.values():
                gate.mask = None

    def _run_hooks(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        captured: dict[str, torch.Tensor] = {}
        counts: dict[str, int] = {}
        by_internal: dict[str, list[str]] = {}
        for n in self.layers:
            by_internal.setdefault(self._internal[n], []).append(n)
        deepest_internal = self._internal[self.deepest]
        deepest_calls = self.access.table[deepest_internal][1].calls
        last_relu: dict[str, Any] = {}
        handles = []

        def relu_hook(_m: nn.Module, inp: Any, out: Any) -> None:
            last_relu["pre"], last_relu["post"] = inp[0], out

        def layer_hook(internal: str) -> Any:
            gate = self.gates.get(internal)

            def fn(_m: nn.Module, inp: Any, out: Any) -> Any:
                counts[internal] = counts.get(internal, 0) + 1
                if gate is not None and out is last_relu.get("post"):
                    out = gate(last_relu["pre"], out)
                for name in by_internal[internal]:
                    captured[name] = out
                if internal == deepest_internal and counts[internal] >= deepest_calls:
                    raise _Stop
                return out

            return fn

        module = self.access.module
        if self.gates:
            for m in module.modules():
                if type(m) is nn.ReLU:
                    handles.append(m.register_forward_hook(relu_hook))
        for internal in by_internal:
            handles.append(module.get_submodule(internal).register_forward_hook(layer_hook(internal)))
        try:
            module(x)
        except _Stop:
            pass
        finally:
            for h in handles:
                h.remove()
        missing = [n for n in self.layers if n not in captured]
        if missing:
            raise LayerError(f"layers {missing} did not run for this input")
        return {n: captured[n] for n in self.layers}


def _get_attr(root: nn.Module, target: str) -> Any:
    obj: Any = root
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj
