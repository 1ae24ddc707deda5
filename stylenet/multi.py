"""Many paintings, one net (Dumoulin et al. 2017): a painting is a row of every norm's scale and
shift, chosen by name; a blend mixes rows. What the entry points share about such nets: choosing
paintings by name, blend weights, a painting's own plain net, adding a painting, and which
painting each training step trains.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from stylenet.model_file import ModelFileError
from stylenet.norm import InstanceNorm
from stylenet.transformer import TransformerNet

SAMPLING = ("cycle", "random", "mix")
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# A painting entry of model.paintings that is a mapping: unset keys take these (style/custom.yaml).
PAINTING_DEFAULTS = CONFIGS / "style" / "custom.yaml"


class StyleChoiceError(ModelFileError):
    """style= does not choose a painting of the model file; the message lists them."""


def painting_names(meta: Mapping[str, Any]) -> list[str]:
    """The paintings of a model file's metadata, in table order ([] for a one-painting file)."""
    return [p["name"] for p in meta.get("paintings", [])]


def how_to_choose(names: Sequence[str]) -> str:
    return (f"choose one with style={names[0]}, a blend with 'style=[{names[0]}:0.7,"
            f"{names[-1]}:0.3]', style=grid for all of them side by side or style=list")


def style_weights(style: Any, names: Sequence[str], where: str = "style") -> torch.Tensor:
    """style= -> (N,) weights over `names`. A name (or index) picks one painting; a blend is a
    list of `name:weight` strings, a {name: weight} mapping or a 'a:0.7,b:0.3' string. Blend
    weights must be >= 0 and are divided by their sum (so [a:7,b:3] and [a:0.7,b:0.3] agree)."""
    if isinstance(style, DictConfig | ListConfig):
        style = OmegaConf.to_container(style)
    if isinstance(style, str) and ("," in style or ":" in style):
        style = [part.strip() for part in style.strip("[]").split(",") if part.strip()]
    if isinstance(style, str | int):
        style = {style: 1.0}
    if isinstance(style, Sequence):
        parts = {}
        for item in style:
            name, _, weight = str(item).partition(":")
            try:
                parts[name.strip()] = float(weight) if weight else 1.0
            except ValueError:
                raise StyleChoiceError(f"{where}={item}: write a blend as name:weight, e.g. "
                                       f"{where}=[{names[0]}:0.7,{names[-1]}:0.3]") from None
        style = parts
    weights = torch.zeros(len(names), dtype=torch.float64)
    for name, weight in dict(style).items():
        index = names.index(name) if name in names else None
        if index is None and isinstance(name, int) and 0 <= name < len(names):
            index = name
        if index is None:
            raise StyleChoiceError(f"{where}={name}: no such painting in this model file: use one "
                                   f"of {', '.join(names)}")
        if not float(weight) >= 0:
            raise StyleChoiceError(f"{where}: weight {weight} of {name} is negative: blend "
                                   "weights are >= 0")
        weights[index] += float(weight)
    if not weights.sum() > 0:
        raise StyleChoiceError(f"{where}: the blend weights sum to 0: give one a positive weight")
    return (weights / weights.sum()).float()


def style_label(weights: torch.Tensor, names: Sequence[str]) -> str:
    """`great_wave`, or `starry_night:0.7+great_wave:0.3` for a blend."""
    parts = [(n, float(w)) for n, w in zip(names, weights, strict=True) if w > 0]
    if len(parts) == 1:
        return parts[0][0]
    return "+".join(f"{n}:{w:.3g}" for n, w in parts)


def choose_painting(net: TransformerNet, meta: dict[str, Any], style: Any,
                    path: Any) -> tuple[TransformerNet, dict[str, Any]]:
    """A loaded model file and style= -> the net to stylize with and its metadata, whose
    "style" is then the chosen painting's record (a blend's: its label and "weights"). A file
    of one painting takes no style= (or its own name); one of several requires it."""
    names = painting_names(meta)
    if not names:
        own = meta.get("style", {}).get("name")
        if style is None or style == own:
            return net, meta
        raise StyleChoiceError(f"style={style}: {path} holds one painting ({own}): leave "
                               "style= out")
    if style is None:
        raise StyleChoiceError(f"{path} holds {len(names)} paintings ({', '.join(names)}): "
                               f"{how_to_choose(names)}")
    weights = style_weights(style, names)
    hot = torch.nonzero(weights).flatten().tolist()
    record = (dict(meta["paintings"][hot[0]]) if len(hot) == 1 else
              {"name": style_label(weights, names), "weights": weights.tolist()})
    return painting_net(net, weights), {**meta, "style": record}


@torch.no_grad()
def painting_net(net: TransformerNet, weights: torch.Tensor) -> TransformerNet:
    """The plain one-painting net that a net of several paintings is for `weights` (N,): the same
    convolutions, every norm's scale and shift the weighted rows (one painting's row exactly).
    Tiling, ONNX, compile and the cache then treat it as any model file's net."""
    plain = TransformerNet(net.channels, net.num_residual, net.pixel_scale, net.edge_kernel)
    hot = torch.nonzero(weights).flatten()
    # one painting: its row, bit for bit; a blend: the weighted rows
    style = (int(hot[0]) if len(hot) == 1 and weights[hot[0]] == 1
             else weights.to(next(net.parameters()).device))
    state = {}
    for name, module in net.named_modules():
        if isinstance(module, InstanceNorm):
            w, b = module.rows(style)
            state[f"{name}.weight"], state[f"{name}.bias"] = w.reshape(-1), b.reshape(-1)
    for key, value in net.state_dict().items():
        state.setdefault(key, value)
    plain.load_state_dict(state)
    return plain.eval().to(next(net.parameters()).device)


@torch.no_grad()
def add_painting(net: TransformerNet) -> TransformerNet:
    """`net` of N paintings -> a net of N + 1 whose new row of every norm is the mean of the
    existing rows (a start that is already a painting-like blend, not the untrained identity),
    and of which only that row trains: convolutions and the N rows are frozen
    (requires_grad False), so an optimizer given the trainable parameters sees the new row only."""
    n = net.num_styles
    grown = TransformerNet(net.channels, net.num_residual, net.pixel_scale, net.edge_kernel,
                           num_styles=n + 1)
    state = dict(net.state_dict())
    for name, module in net.named_modules():
        if isinstance(module, InstanceNorm):
            for key in (f"{name}.weight", f"{name}.bias"):
                state[key] = torch.cat([state[key], state[key].mean(0, keepdim=True)])
    grown.load_state_dict(state)
    grown.requires_grad_(False)
    for norm in grown.norms():
        norm.freeze_rows(n)
    return grown


def step_paintings(mode: str, n: int, step: int, seed: int, batch: int,
                   batch_idx: int | None = None,
                   device: torch.device | str = "cpu") -> int | torch.Tensor:
    """The painting(s) of a training step's photos, from the step alone (so a resumed run goes
    on as it would have): cycle: step % n; random: one drawn per step; mix: one drawn per
    photo, a (batch,) index tensor; draws come from a generator seeded by (seed, step). A
    validation batch (batch_idx given): its photos take the paintings in turn."""
    if batch_idx is not None:
        return (batch_idx * batch + torch.arange(batch, device=device)) % n
    if mode == "cycle":
        return step % n
    generator = torch.Generator().manual_seed((seed * 1_000_003 + step) % 2**63)
    if mode == "random":
        return int(torch.randint(n, (), generator=generator))
    if mode == "mix":
        return torch.randint(n, (batch,), generator=generator).to(device)
    raise ValueError(f"model.sampling={mode!r}: use one of {', '.join(SAMPLING)}")


def painting_configs(cfg: DictConfig) -> list[dict[str, Any]]:
    """model.paintings -> one resolved style config per painting. An entry is the name of a
    configs/style/ file (starry_night) or a mapping like one (name and image required, the rest
    from style/custom.yaml)."""
    entries = OmegaConf.select(cfg, "model.paintings") or []
    known = sorted(p.stem for p in (CONFIGS / "style").glob("*.yaml") if p.stem != "custom")
    out = []
    for i, entry in enumerate(entries):
        if isinstance(entry, str):
            path = CONFIGS / "style" / f"{entry}.yaml"
            if entry == "custom" or not path.is_file():
                raise ValueError(f"model.paintings[{i}]={entry}: no such style config: use one "
                                 f"of {', '.join(known)}, or a mapping {{name:...,image:...}}")
            node = OmegaConf.load(path)
        else:
            node = OmegaConf.merge(OmegaConf.load(PAINTING_DEFAULTS), entry)
        # Resolved beside the run's paths, as the style group's ${paths.data_dir} would be.
        scope = OmegaConf.create({"paths": cfg.paths, "painting": node})
        for key in ("name", "image"):
            if OmegaConf.is_missing(scope.painting, key):
                raise ValueError(f"model.paintings[{i}] has no {key}: give name and image, "
                                 "e.g. {name:mine,image:/path/to/painting.jpg}")
        out.append(OmegaConf.to_container(scope.painting, resolve=True))
    names = [p["name"] for p in out]
    if len(out) < 2 or len(set(names)) != len(names):
        raise ValueError(f"model.paintings={names}: give two or more paintings with distinct "
                         "names, e.g. model.paintings=[starry_night,great_wave]")
    return out


def step_terms(net, loss, photos: torch.Tensor, style: int | torch.Tensor | None,
               offset: int = 0) -> dict[str, torch.Tensor]:
    """A training step's loss terms: one painting (style None), painting `style` of several, or
    a painting per photo ((B,) indices). Painting k is the net's row offset + k."""
    if style is None:
        return loss(net(photos), photos)
    if isinstance(style, int):
        return loss(net(photos, style=style + offset), photos, painting=style)
    return mixed_terms(loss, net(photos, style=style + offset), photos, style)


def mixed_terms(loss, output: torch.Tensor, photos: torch.Tensor,
                paintings: torch.Tensor) -> dict[str, torch.Tensor]:
    """A batch whose photos have different paintings (sampling=mix): each painting's loss on its
    photos, weighted by their share of the batch, so every photo counts as in a batch of one
    painting. paintings: (B,) indices."""
    total: dict[str, torch.Tensor] = {}
    for k in paintings.unique().tolist():
        mask = paintings == k
        share = mask.sum() / len(paintings)
        for name, value in loss(output[mask], photos[mask], painting=k).items():
            total[name] = total.get(name, 0.0) + share * value
    return total


def content_targets(loss, photos: torch.Tensor,
                    paintings: int | torch.Tensor | None) -> torch.Tensor:
    """Each photo's content target (recoloured to its painting's palette where that painting
    asks for content_palette): the identity steps' pixel target. None: a net of one painting."""
    if paintings is None or isinstance(paintings, int):
        return loss.content_image(photos, paintings or 0)
    out = photos.clone()
    for k in paintings.unique().tolist():
        mask = paintings == k
        out[mask] = loss.content_image(photos[mask], k)
    return out


def painting_listing(model: Any) -> str:
    """What `infer.py model=FILE style=list` prints: the file's paintings, in order."""
    from stylenet.model_file import load_model

    _, meta = load_model(model)
    names = painting_names(meta)
    if not names:
        return (f"{model}: one painting, {meta.get('style', {}).get('name', '?')}: no style= "
                "needed")
    lines = [f"{model}: {len(names)} paintings; {how_to_choose(names)}"]
    for p in meta["paintings"]:
        lines.append(f"  {p['name']:<24} sha256 {str(p.get('sha256', '?'))[:16]}")
    return "\n".join(lines)


def painting_settings(p: Mapping[str, Any], index: int, shared: dict[str, Any],
                      shared_layers: dict[str, float]) -> dict[str, Any]:
    """One painting's loss settings: its own where its style config gives them, else the
    shared ones; style_layers merge over the shared layer weights (0 switches one off)."""
    where = f"model.paintings[{index}] ({p.get('name', index)})"
    out = {key: p.get(key, value) for key, value in shared.items()}
    layers = {**shared_layers, **(p.get("style_layers") or {})}
    for key, value in [*out.items(), *[(f"style_layers.{n}", w) for n, w in layers.items()]]:
        if not isinstance(value, bool) and value < 0:
            raise ValueError(f"{where}.{key}={value:g} is negative: weights must be >= 0")
    out["style_layers"] = {name: float(w) for name, w in layers.items() if w != 0}
    out["content_palette"] = bool(out["content_palette"])
    return out
