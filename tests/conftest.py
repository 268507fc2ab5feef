import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory):
    """Point ``$REPTILE_CACHE`` (read by ``reptile.data.glyphs.default_cache_dir``) at a temporary
    folder for the whole session, so that the suite never writes ``~/.cache/reptile-lab``.

    Set in ``os.environ`` so that subprocesses the tests start (``python -m reptile ...``) inherit
    it. Session-scoped: a glyph set built by one test is reused by the next, as the user cache would
    be. A test that needs its own cache sets ``REPTILE_CACHE`` or passes ``cache_dir`` itself.
    """
    cache = tmp_path_factory.mktemp("reptile-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REPTILE_CACHE", str(cache))
        yield cache


@pytest.fixture(autouse=True)
def _deterministic_threads():
    # 2-core CI machine: one intra-op thread keeps timings and float reductions reproducible
    torch.set_num_threads(1)
    yield
