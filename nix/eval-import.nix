# What `tether init` reads from a flake or file (docs/migrating.md): every
# host another tool describes, as JSON for tether_core::onboard.
#
#   from = "deploy-rs": `deploy.nodes` (settings: the system profile's win
#     over the node's, the node's over `deploy`'s, as in deploy-rs);
#   from = "colmena": `colmenaHive.deploymentConfig` (colmena evaluated the
#     deployment options), else the raw `colmena` hive, whose node modules
#     are read without the module system (imports are not followed);
#   from = "nixos": the names of `nixosConfigurations`.
#
# Each host also gets the public keys its own configuration declares
# (`services.openssh.knownHosts`), when it has a NixOS configuration.
# Everything is read through tryEval: a setting that cannot be evaluated
# here becomes a note, never a failure of the whole import.
{ flakeRef ? null, file ? null, from }:
let
  outputs =
    if flakeRef != null then builtins.getFlake flakeRef
    else
      let value = import (/. + file);
      in if builtins.isFunction value then value { } else value;

  configs =
    if builtins.isAttrs (outputs.nixosConfigurations or null)
    then outputs.nixosConfigurations else { };

  try = default: v:
    let r = builtins.tryEval (builtins.deepSeq v v);
    in if r.success then r.value else default;

  # A value as one line of text, for comments.
  show = v:
    let r = builtins.tryEval (
      if builtins.isFunction v then "<function>"
      else if builtins.isAttrs v && (v.type or null) == "derivation" then "<derivation>"
      else if builtins.isAttrs v then "{ ${toString (builtins.attrNames v)} }"
      else builtins.toJSON v);
    in if r.success then r.value else "<cannot be evaluated>";

  strOrNull = v: let x = try null v; in if builtins.isString x then x else null;
  intOrNull = v: let x = try null v; in if builtins.isInt x then x else null;
  strings = v: let x = try [ ] v; in if builtins.isList x then builtins.filter builtins.isString x else [ ];

  declaredKeys = name:
    let
      known = try { } ((configs.${name} or { }).config.services.openssh.knownHosts or { });
    in
    if !(builtins.isAttrs known) then [ ]
    else map
      (n: {
        names = [ n ] ++ strings (known.${n}.hostNames or [ ]);
        publicKey = strOrNull (known.${n}.publicKey or null);
        option = "nixosConfigurations.${name}.config.services.openssh.knownHosts.${n}";
      })
      (builtins.attrNames known);

  configurationOf = name: if configs ? ${name} then name else null;

  withOther = known: settings: builtins.listToAttrs (map
    (n: { name = n; value = show settings.${n}; })
    (builtins.filter (n: !(builtins.elem n known)) (builtins.attrNames settings)));

  # deploy-rs
  deployRs =
    let
      top = outputs.deploy or { };
      nodes = top.nodes or { };
      generic = removeAttrs top [ "nodes" ];
      node = name: n:
        let
          profiles = n.profiles or { };
          system = profiles.system or { };
          settings = generic // removeAttrs n [ "profiles" "profilesOrder" ] // removeAttrs system [ "path" ];
          carried = [ "hostname" "sshUser" "sshOpts" ];
          otherProfiles = builtins.filter (p: p != "system") (builtins.attrNames profiles);
        in
        {
          address = strOrNull (n.hostname or null);
          sshUser = strOrNull (settings.sshUser or null);
          sshOpts = strings (settings.sshOpts or [ ]);
          configuration = configurationOf name;
          other = withOther carried settings
            // builtins.listToAttrs (map (p: { name = "profiles.${p}"; value = "(a profile other than system: tether deploys the system only)"; }) otherProfiles);
          declaredKeys = declaredKeys name;
        };
    in
    {
      hosts = builtins.mapAttrs node nodes;
      notes = if nodes == { } then [ "the flake has no deploy.nodes" ] else [ ];
    };

  # colmena
  colmenaCarried = [ "targetHost" "targetPort" "targetUser" "tags" ];
  fromDeployment = name: d: {
    address = if d ? targetHost then strOrNull d.targetHost else name;
    sshPort = intOrNull (d.targetPort or null);
    sshUser = strOrNull (d.targetUser or null);
    tags = strings (d.tags or [ ]);
    configuration = configurationOf name;
    other = withOther colmenaCarried (try { } d);
    declaredKeys = declaredKeys name;
  };

  # A raw hive's node module, called with `name` and with every other
  # argument it asks for failing if used (no module system here).
  moduleOf = name: m:
    if builtins.isFunction m then
      m (builtins.mapAttrs
        (arg: _: if arg == "name" then name else throw "tether init: `${arg}` is not available reading a raw colmena hive")
        (builtins.functionArgs m))
    else m;

  rawHive = hive:
    let
      names = builtins.filter (n: !(builtins.elem n [ "meta" "defaults" "network" ])) (builtins.attrNames hive);
      defaults = try { } ((moduleOf "defaults" (hive.defaults or { })).deployment or { });
      deployment = name: try { } ((moduleOf name hive.${name}).deployment or { });
      merged = name:
        let d = deployment name;
        in defaults // d // { tags = strings (defaults.tags or [ ]) ++ strings (d.tags or [ ]); };
    in
    {
      hosts = builtins.listToAttrs (map (name: { inherit name; value = fromDeployment name (merged name); }) names);
      notes = [ "read from the raw `colmena` hive without the module system: deployment settings made in imported modules are not seen (a `colmenaHive` output is read in full)" ];
    };

  colmena =
    if outputs ? colmenaHive && (try false (outputs.colmenaHive ? deploymentConfig))
    then { hosts = builtins.mapAttrs fromDeployment outputs.colmenaHive.deploymentConfig; notes = [ ]; }
    else if outputs ? colmena then rawHive outputs.colmena
    else { hosts = { }; notes = [ "the flake has neither colmenaHive nor colmena" ]; };

  # plain nixosConfigurations
  nixos = {
    hosts = builtins.mapAttrs
      (name: _: { configuration = name; declaredKeys = declaredKeys name; })
      configs;
    notes = [ ];
  };
in
if from == "deploy-rs" then deployRs
else if from == "colmena" then colmena
else if from == "nixos" then nixos
else throw "eval-import.nix: unknown source ${from}"
