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
#   mode = "variants": for the one host in `hosts`, its toplevel (`plain`)
#     and its rehearsal variant (`variant`): the configuration's own
#     `extendModules { modules = [ tether's module ] ++ rehearsal.modules; }`
#     (defaults' modules first), where tether's module gives it the staging
#     host's name and records `config.tether.rehearsal` = `rehearsal` (the
#     production and staging names and addresses) for the user's modules.
#     `addresses` lists the IP addresses the variant declares (NixOS's
#     networking.interfaces and systemd.network, or a fixture's), so tether
#     can refuse a variant that would take production's address.
#     `modulesFrom` (`{ flakeRef }` or `{ file }`) is where `rehearsal.modules`
#     are read: the revision being deployed, also for the old revision's
#     variant, so both get today's modules.
{ flakeRef ? null, file ? null, mode ? "inventory", hosts ? [ ], rehearsal ? { }, modulesFrom ? null }:
let
  load = { flakeRef ? null, file ? null }:
    if flakeRef != null then builtins.getFlake flakeRef
    else
      let value = import (/. + file);
      in if builtins.isFunction value then value { } else value;

  outputs = load { inherit flakeRef file; };
  modulesOutputs = if modulesFrom == null then outputs else load modulesFrom;

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

  tetherModule = { lib, ... }: {
    options.tether.rehearsal = lib.mkOption {
      type = lib.types.attrs;
      default = { };
      description = "Set by tether in a rehearsal variant: production, staging, address, productionAddress.";
    };
    config = {
      networking.hostName = lib.mkForce rehearsal.staging;
      tether.rehearsal = rehearsal;
    };
  };

  rehearsalModules = name:
    let
      fromSet = s:
        let r = if builtins.isAttrs s then s.rehearsal or { } else { };
        in if builtins.isAttrs r && builtins.isList (r.modules or null) then r.modules else [ ];
      specs = modulesOutputs.tether or { };
    in
    fromSet (specs.defaults or { }) ++ fromSet ((specs.hosts or { }).${name} or { });

  # The addresses a configuration declares, without the prefix length.
  declaredAddresses = config:
    let
      bare = a: builtins.head (builtins.split "/" (toString a));
      attrValuesOf = v: if builtins.isAttrs v then builtins.attrValues v else [ ];
      fromInterfaces = builtins.concatMap
        (i: map (a: a.address) ((i.ipv4 or { }).addresses or [ ] ++ (i.ipv6 or { }).addresses or [ ]))
        (attrValuesOf ((config.networking or { }).interfaces or { }));
      fromNetworkd = builtins.concatMap
        (n: (n.address or [ ])
          ++ map (a: a.Address or ((a.addressConfig or { }).Address or "")) (n.addresses or [ ]))
        (attrValuesOf (((config.systemd or { }).network or { }).networks or { }));
      fromFixture = if config ? fixture && config.fixture ? address then [ config.fixture.address ] else [ ];
      all = map bare (fromInterfaces ++ fromNetworkd ++ fromFixture);
      tried = builtins.tryEval (builtins.deepSeq all all);
    in
    if tried.success then builtins.filter (a: a != "") tried.value else null;

  variantOf = name:
    let
      host = hostSpecs.${name} or null;
      spec = if builtins.isAttrs host then host.configuration or name else null;
      resolved = if builtins.isString spec then configs.${spec} or null else spec;
      plain = toplevelOf name;
      extended = resolved.extendModules { modules = [ tetherModule ] ++ rehearsalModules name; };
      top = extended.config.system.build.toplevel or null;
    in
    if plain ? error then { error = plain.error; }
    else if !(builtins.isAttrs resolved && resolved ? extendModules)
    then { error = "the configuration has no extendModules (nixpkgs.lib.nixosSystem's result has one)"; }
    else if !(isDerivation top) then { error = "the rehearsal variant has no config.system.build.toplevel derivation"; }
    else {
      inherit plain;
      variant = { drvPath = top.drvPath; outputPath = top.outPath; system = top.system or null; };
      addresses = declaredAddresses extended.config;
    };

  variants = builtins.listToAttrs (map (name: { inherit name; value = variantOf name; }) hosts);
in
if mode == "inventory" then inventory
else if mode == "toplevels" then toplevels
else if mode == "variants" then variants
else throw "eval-inventory.nix: unknown mode ${mode}"
