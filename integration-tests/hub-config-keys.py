"""Fails on any hub config key that the pinned JupyterHub, authenticator or spawner does not define.

traitlets ignores an unknown key with at most a warning: the appliance this replaces set
`allowedGroups` (camelCase), which was silently ignored, so every directory user could log in.
Usage: python hub-config-keys.py JUPYTERHUB_CONFIG.py [--expect-unknown]
  Runs the config with a recording stand-in for traitlets' `c`, then checks each Class.key
  against the class's traits in the installed packages (the hub fixture's venv: jupyterhub
  5.5.0, jupyterhub-ldapauthenticator 2.0.2, kubespawner 7.0.0).
  --expect-unknown: succeed only if some key is unknown (the check's own test).
"""
import importlib
import sys

CLASSES = {
    "JupyterHub": "jupyterhub.app.JupyterHub",
    "Authenticator": "jupyterhub.auth.Authenticator",
    "LDAPAuthenticator": "ldapauthenticator.LDAPAuthenticator",
    "KubeSpawner": "kubespawner.KubeSpawner",
    "Spawner": "jupyterhub.spawner.Spawner",
}


class Section(dict):
    def __setattr__(self, key, value):
        self[key] = value


class Config(dict):
    def __getattr__(self, key):
        return self.setdefault(key, Section())


def main(argv):
    path = argv[1]
    expect_unknown = "--expect-unknown" in argv
    c = Config()
    code = open(path, encoding="utf-8").read()
    exec(compile(code, path, "exec"), {"get_config": lambda: c, "__name__": "__config__"})
    unknown = []
    checked = 0
    for class_name, traits in c.items():
        target = CLASSES.get(class_name)
        if target is None:
            unknown.append(f"{class_name} (a class this check does not know; add it to CLASSES)")
            continue
        module, _, name = target.rpartition(".")
        cls = getattr(importlib.import_module(module), name)
        defined = set(cls.class_trait_names())
        for key in traits:
            checked += 1
            if key not in defined:
                unknown.append(f"{class_name}.{key}")
    if expect_unknown:
        if unknown:
            print(f"ok: the check refuses {', '.join(unknown)}")
            return 0
        print("FAIL: the check accepted a config with an unknown key")
        return 1
    if unknown:
        print(f"FAIL: keys the pinned packages do not define: {', '.join(unknown)}")
        return 1
    print(f"ok: all {checked} keys in {len(c)} classes are defined by the pinned packages")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
