# tether's one evaluation of a user's flake or file (see docs/inventory.md).
#
# The tether binary calls this function with `nix eval --json --impure --expr`
# (Nix 2.8's `nix eval --expr` does not auto-call functions with `--argstr`,
# so the arguments are written into the expression as escaped Nix strings).
#
#   mode = "inventory": the `tether` output, with each host's `configuration`
#     replaced by a small descriptor, and the names of nixosConfigurations.
#     No NixOS configuration is evaluated: only attribute names and types are
#     looked at, so this stays fast for large fleets.
#   mode = "toplevels": for the hosts named in `hosts`, the drvPath, outPath
#     and system of each host's system toplevel, in this one evaluation
#     (as `{ drvPath, outputPath, system }`, or `{ error }`).
{ flakeRef ? null, file ? null, mode ? "inventory", hosts ? [ ] }:
let
  outputs =
    if flakeRef != null then builtins.getFlake flakeRef
    else
      let value = import (/. + file);
      in if builtins.isFunction value then value { } else value;

  isDerivation = v: builtins.isAttrs v && (v.type or null) == "derivation";
  isPlainAttrs = v: builtins.isAttrs v && !(isDerivation v) && !(v ? _type);

  configs =
    if builtins.isAttrs (outputs.nixosConfigurations or null)
    then outputs.nixosConfigurations else { };

  # Makes any value safe for builtins.toJSON without calling functions or
  # evaluating derivations, so tether can name a wrong value instead of
  # failing inside Nix. The depth bound keeps a NixOS configuration pasted
  # into the wrong field from being walked whole.
  plain = depth: v:
    if builtins.isFunction v then { "$nix" = "lambda"; }
    else if isDerivation v then { "$nix" = "derivation"; }
    else if builtins.isAttrs v && v ? _type then { "$nix" = toString v._type; }
    else if builtins.isPath v then toString v
    else if depth > 6 && (builtins.isAttrs v || builtins.isList v) then { "$nix" = "deeply nested value"; }
    else if builtins.isList v then map (plain (depth + 1)) v
    else if builtins.isAttrs v then builtins.mapAttrs (_: plain (depth + 1)) v
    else v;

  describeConfiguration = name: host:
    if !(host ? configuration) then { kind = "name"; inherit name; implicit = true; }
    else
      let c = host.configuration; in
      if builtins.isString c then { kind = "name"; name = c; implicit = false; }
      else if isDerivation c then { kind = "derivation"; }
      else if builtins.isAttrs c && c ? config then { kind = "configuration"; }
      else { kind = "invalid"; type = builtins.typeOf c; };

  describeHost = name: host:
    if isPlainAttrs host
    then builtins.mapAttrs
      (field: value: if field == "configuration" then describeConfiguration name host else plain 0 value)
      host
    else plain 0 host;

  describeTether = t:
    if isPlainAttrs t
    then builtins.mapAttrs
      (field: value:
        if field == "hosts" && isPlainAttrs value then builtins.mapAttrs describeHost value
        else plain 0 value)
      t
    else plain 0 t;

  inventory = {
    hasTether = outputs ? tether;
    tether = if outputs ? tether then describeTether outputs.tether else null;
    nixosConfigurations = builtins.attrNames configs;
  };

  hostSpecs =
    let h = if builtins.isAttrs (outputs.tether or null) then outputs.tether.hosts or { } else { };
    in if builtins.isAttrs h then h else { };

  toplevelOf = name:
    let
      host = hostSpecs.${name} or null;
      spec = if builtins.isAttrs host then host.configuration or name else null;
      resolved = if builtins.isString spec then configs.${spec} or null else spec;
      top =
        if isDerivation resolved then resolved
        else if builtins.isAttrs resolved then resolved.config.system.build.toplevel or null
        else null;
    in
    if host == null then { error = "no such host in tether.hosts"; }
    else if builtins.isString spec && resolved == null then { error = "no nixosConfigurations.${spec}"; }
    else if !(isDerivation top) then { error = "the configuration has no config.system.build.toplevel derivation"; }
    # Not `outPath`: builtins.toJSON would print an attribute set that has an
    # `outPath` as that string alone.
    else { drvPath = top.drvPath; outputPath = top.outPath; system = top.system or null; };

  toplevels = builtins.listToAttrs (map (name: { inherit name; value = toplevelOf name; }) hosts);
in
if mode == "inventory" then inventory
else if mode == "toplevels" then toplevels
else throw "eval-inventory.nix: unknown mode ${mode}"
