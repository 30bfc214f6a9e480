"""The training report, opened in a real headless chromium: it loads with
no console errors, every figure is there and loaded, and the numbers on
the page are the ValResults' (counted here independently)."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
from PIL import Image

from spacer_worker.cli import main as cli_main
from spacer_worker.data_classes import ValResults
from spacer_worker.messages import TrainClassifierReturnMsg

FIGURES = {'confusion_counts.png', 'confusion_normalised.png',
           'per_class.png', 'threshold.png', 'ref_accs.png', 'previous.png'}


def synthetic(classes: int, points: int, seed: int = 0) -> ValResults:
    """A ValResults over ``classes`` labels where the last two never occur
    as the truth (so the page must show an accuracy it cannot compute)."""
    rng = random.Random(seed)
    gt = [rng.randrange(classes - 2) for _ in range(points)]
    est = [g if rng.random() < 0.65 else rng.randrange(classes) for g in gt]
    scores = [round(rng.uniform(0.2, 1.0), 4) for _ in gt]
    return ValResults(scores=scores, gt=gt, est=est,
                      classes=[4000 + i for i in range(classes)])


def open_page(browser, index: Path) -> dict:
    browser.get_log('browser')          # drop what earlier pages logged
    browser.get(index.resolve().as_uri())
    browser.execute_script('return document.readyState')
    return browser.execute_script("""
        const rows = sel => [...document.querySelectorAll(sel)]
            .map(r => ({...r.dataset, cells: [...r.cells].map(c => c.textContent)}));
        return {
          images: [...document.images].map(i => ({
              src: i.getAttribute('src'), complete: i.complete,
              width: i.naturalWidth, height: i.naturalHeight})),
          accuracy: document.getElementById('accuracy').dataset.value,
          accuracyText: document.getElementById('accuracy').textContent,
          perClass: rows('#per-class tbody tr'),
          thresholds: rows('#thresholds tbody tr'),
          refAccs: rows('#ref-accs tbody tr'),
          previous: rows('#previous tbody tr'),
          externals: [...document.querySelectorAll('[src],[href]')]
              .map(e => e.getAttribute('src') || e.getAttribute('href'))
              .filter(u => /^[a-z]+:\\/\\//i.test(u)),
        };""")


def console_errors(browser) -> list[dict]:
    """The page's errors once it has loaded: those it recorded itself
    (complete after the load event, see ``PAGE_ERROR_RECORDER``) and
    whatever the console log has delivered by then."""
    from selenium.webdriver.support.ui import WebDriverWait
    WebDriverWait(browser, 30).until(lambda b: b.execute_script(
        'return document.readyState') == 'complete')
    recorded = browser.execute_script('return window.__pageErrors')
    assert recorded is not None, 'the page error recorder was not installed'
    logged = [entry for entry in browser.get_log('browser')
              if entry['level'] in ('SEVERE', 'ERROR')]
    return [{'level': 'SEVERE', 'source': 'page', 'message': message}
            for message in recorded] + logged


def assert_page_matches(browser, index: Path, val: ValResults,
                        train: TrainClassifierReturnMsg | None,
                        names: dict[str, str]) -> dict:
    page = open_page(browser, index)
    assert console_errors(browser) == []
    assert page['externals'] == []

    # Every figure is on the page, loaded, and is the PNG file beside it.
    folder = index.parent
    shown = {image['src'] for image in page['images']}
    expected_figures = FIGURES - {'ref_accs.png', 'previous.png'}
    if train is not None and train.ref_accs:
        expected_figures.add('ref_accs.png')
    if train is not None and train.pc_accs:
        expected_figures.add('previous.png')
    assert shown == expected_figures
    assert {p.name for p in folder.glob('*.png')} == expected_figures
    for image in page['images']:
        assert image['complete'] and image['width'] > 0, image
        with Image.open(folder / image['src']) as png:
            assert (image['width'], image['height']) == png.size

    # Overall and per-class numbers, counted here.
    right = [g == e for g, e in zip(val.gt, val.est, strict=True)]
    assert float(page['accuracy']) == pytest.approx(sum(right) / len(right))
    assert page['accuracyText'] == f'{sum(right) / len(right):.1%}'
    assert len(page['perClass']) == len(val.classes)
    for index_, (label, row) in enumerate(zip(val.classes, page['perClass'],
                                              strict=True)):
        support = val.gt.count(index_)
        correct = sum(1 for g, e in zip(val.gt, val.est, strict=True)
                      if g == e == index_)
        assert row['label'] == str(label)
        assert row['cells'][1] == names.get(str(label), str(label))
        assert int(row['support']) == support
        assert int(row['correct']) == correct
        assert int(row['predicted']) == val.est.count(index_)
        if support:
            assert float(row['accuracy']) == pytest.approx(correct / support)
        else:
            assert row['accuracy'] == '' and row['cells'][4] == '–'

    # Accuracy and coverage at each threshold of the table.
    assert page['thresholds']
    for row in page['thresholds']:
        threshold = float(row['threshold'])
        kept = [ok for ok, s in zip(right, val.scores, strict=True)
                if s >= threshold]
        assert int(row['kept']) == len(kept)
        assert float(row['coverage']) == pytest.approx(len(kept) / len(right))
        if kept:
            assert float(row['accuracy']) == pytest.approx(
                sum(kept) / len(kept))

    if train is not None:
        assert [float(r['accuracy']) for r in page['refAccs']] == \
            pytest.approx(train.ref_accs)
        assert [int(r['epoch']) for r in page['refAccs']] == \
            list(range(1, len(train.ref_accs) + 1))
        if train.pc_accs:
            assert [float(r['accuracy']) for r in page['previous']] == \
                pytest.approx([*train.pc_accs, train.acc])
    return page


def test_the_console_check_sees_a_broken_page(browser, tmp_path):
    # Given a page whose image is missing, the check used below reports it.
    (tmp_path / 'index.html').write_text(
        '<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head>'
        '<body><img src="missing.png"></body></html>')
    browser.get_log('browser')          # drop what earlier pages logged
    browser.get((tmp_path / 'index.html').as_uri())
    assert any('missing.png' in entry['message']
               for entry in console_errors(browser))


def test_a_100_class_report_renders_and_matches(browser, tmp_path):
    val = synthetic(classes=100, points=6000)
    train = TrainClassifierReturnMsg(
        acc=0.66, pc_accs=[0.52, 0.61, 0.64],
        ref_accs=[0.3 + 0.007 * i for i in range(50)], runtime=812.5)
    names = {str(label): f'Label {i:03d} with a fairly long name (genus sp.)'
             for i, label in enumerate(val.classes)}
    # Names are text, never markup.
    names[str(val.classes[1])] = '<img src=x onerror=alert(1)> Acropora & "co"'
    (tmp_path / 'valresult.json').write_text(json.dumps(val.serialize()))
    (tmp_path / 'result.json').write_text(json.dumps(train.serialize()))
    (tmp_path / 'names.json').write_text(json.dumps(names))

    code = cli_main(['report', str(tmp_path / 'valresult.json'),
                     '--labels', str(tmp_path / 'names.json'),
                     '--train-result', str(tmp_path / 'result.json'),
                     '--out', str(tmp_path / 'report')])

    assert code == 0
    page = assert_page_matches(browser, tmp_path / 'report' / 'index.html',
                               val, train, names)
    # Big enough for 100 readable labels: at least ~15 px per class.
    counts = next(i for i in page['images']
                  if i['src'] == 'confusion_counts.png')
    assert counts['height'] >= 100 * 15
    saved = json.loads((tmp_path / 'report' / 'report.json').read_text())
    assert saved['confusion'][0][0] == sum(
        1 for g, e in zip(val.gt, val.est, strict=True) if g == e == 0)


def test_a_report_without_the_training_result(browser, tmp_path):
    val = ValResults.example()
    (tmp_path / 'valresult.json').write_text(json.dumps(val.serialize()))

    assert cli_main(['report', str(tmp_path / 'valresult.json')]) == 0

    index = tmp_path / 'valresult_report' / 'index.html'
    assert_page_matches(browser, index, val, None, {})
    assert browser.find_element('id', 'ref-accs-missing').text


@pytest.mark.parametrize('content, error', [
    ('{"scores": [0.5], "gt": [3], "est": [0], "classes": [1]}',
     'out of range'),
    ('not json', 'not valid JSON'),
])
def test_bad_valresults_are_refused_with_the_reason(tmp_path, capsys,
                                                    content, error):
    (tmp_path / 'valresult.json').write_text(content)

    assert cli_main(['report', str(tmp_path / 'valresult.json')]) == 2

    assert error in capsys.readouterr().err
    assert not (tmp_path / 'valresult_report').exists()


@pytest.mark.slow
def test_the_demo_prints_its_report_and_it_renders(browser, embedded_demo):
    # The demo run tests/client/test_cli.py checks (one run for both): its
    # accuracy is that test's business; here, its report.
    done = embedded_demo.done
    assert done.returncode in (0, 1), done.stdout[-3000:] + \
        done.stderr[-3000:]
    assert 'accuracy on 1 held-out images' in done.stdout

    printed = re.search(r'training report .*: (\S+index\.html)$',
                        done.stdout, re.MULTILINE)
    assert printed, done.stdout[-2000:]
    index = Path(printed.group(1))
    model = embedded_demo.out / 'model'
    assert index == model / 'classifier_report' / 'index.html'
    val = ValResults.deserialize(json.loads(
        (model / 'valresult.json').read_text()))
    train = TrainClassifierReturnMsg.deserialize(json.loads(
        (model / 'trainresult.json').read_text()))
    names = {'1': 'sand', '2': 'coral', '3': 'algae', '4': 'rock'}
    page = assert_page_matches(browser, index, val, train, names)
    assert len(page['refAccs']) == embedded_demo.epochs
    # No previous classifiers in the demo: the page says so.
    assert browser.find_element('id', 'previous-missing').text
