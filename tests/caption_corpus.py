"""A deterministic corpus of 2,500 varied captions for checking the Python PTB tokenizer against the Java one.

Half are ordinary COCO-style captions (templates over subjects, actions, objects and places, in varied casing and
final punctuation); the rest carry one to three inserts from the categories where tokenizers disagree: quotes
(ASCII, curly, guillemets), accented and non-Latin words, abbreviations and acronyms, numbers (thousands, decimals,
fractions, times, dates, money, ordinals, phone numbers), hyphens and dashes, emoticons, repeated punctuation and
ellipses, HTML entities and tags, contractions, URLs / e-mails / @names / #tags / file names, brackets, symbols,
odd whitespace (tabs, no-break and zero-width spaces), emoji. ``corpus()`` is the list; ``image_split()`` groups
it into a prediction/reference setup (5 captions an image: 4 references, 1 prediction).
"""

from __future__ import annotations

import random

SUBJECTS = ["a man", "a woman", "two dogs", "a small child", "a group of people", "an old man", "a cat", "three kids",
            "a young girl", "a brown horse", "a large elephant", "a surfer", "a skateboarder", "a chef", "the players",
            "a couple", "a baby", "a herd of sheep", "a teddy bear", "a police officer", "a giraffe", "some birds"]
ACTIONS = ["riding", "holding", "sitting on", "standing next to", "looking at", "eating", "playing with",
           "walking across", "throwing", "carrying", "laying on", "flying over", "cutting", "jumping over",
           "waiting for", "parked near", "watching", "painting"]
OBJECTS = ["a red bus", "a wave", "a frisbee", "a slice of pizza", "a wooden bench", "a laptop", "an umbrella",
           "a kite", "a plate of food", "the train", "a tennis racket", "a cake with candles", "a motorcycle",
           "a fire hydrant", "a stop sign", "two bananas", "a bowl of soup", "a surfboard", "a clock tower"]
PLACES = ["on a city street", "in the park", "at the beach", "in a kitchen", "near the water", "in a field",
          "on the snow", "at an airport", "in front of a building", "on a table", "under a tree", "at night",
          "in the rain", "next to a fence", "inside a living room", ""]
ENDINGS = ["", ".", ".", " .", "!", "?", "..."]

INSERTS = {
    "quotes": ['"hello"', '"Stop"', "a \"big\" dog", "'quoted'", "“smart quotes”", "‘single’", "«guillemets»",
               "„low“", "''double single''", "``latex``", "\"", "'", "the \"best\" ever", "'90s", "\"5 star\"",
               "it's \"fine\"", "He said, \"Look!\"", "‹x›", "‛odd", "dogs' toys"],
    "unicode": ["café", "naïve", "jalapeño", "crème brûlée", "São Paulo", "Zürich", "cafe\u0301", "Ærø", "smørrebrød",
                "Ελληνικά", "Москва", "東京", "señor", "façade", "Straße", "İstanbul", "ǅemal", "ﬁne", "Å", "œuvre",
                "ΣΟΦΟΣ", "ΟΔΟΣ", "ıi", "Ωmega", "ŋ", "ʼokina"],
    "abbrev": ["Mr. Smith", "Mrs. Jones", "Dr. Who", "St. Louis", "U.S.", "U.S. Army", "the U.K.", "e.g.", "i.e.",
               "etc.", "vs.", "a.m.", "p.m.", "Jan. 5", "Inc.", "Co.", "Ltd.", "No. 5", "approx.", "Ave.", "Mt. Fuji",
               "Prof. X", "Jr.", "U.S.A.", "A.B.C. news", "Calif.", "Sgt. Pepper", "Ph.D.", "fig. 3", "Pty. Ltd."],
    "numbers": ["1,000", "3.14", "2.5", "10:30", "1/2", "1 1/2", "½", "¾ cup", "50%", "$5", "$5.99", "€10", "£3",
                "¥100", "¢50", "#1", "2nd", "3rd place", "1990s", "-5 degrees", "+7", "555-1234", "(555) 123-4567",
                "12/25/2020", "2020-01-01", "3x4", "1.000.000", "0.5mm", "20kg", "7-11", "2:1", "1st", "A4", "5'10\"",
                "US$20", "9/11", "3-4", "x2", "4th of July", "²", "H₂O", "10^3"],
    "hyphens": ["x-ray", "T-shirt", "double-decker", "well-known", "3-year-old", "self-driving", "e-mail", " - ", "--",
                "---", "----", "-----", "a-b-c", "-", "co-op", "non-U.S.", "pre-", "anti-war", "—", "–", "‐", "‑",
                "‒", "―", "x - y", "re-enter", "o'neil-smith", "up-to-date"],
    "emoticons": [":)", ":(", ":D", ";)", ":-)", ":P", "<3", "^_^", "XD", ":-(", ":o", "=)", ":/", ":'(", "(:",
                  ";-)", "-_-", "o_O", ":*", ">:(", "(^_^)", "x_x"],
    "repeated": ["!!!", "???", "?!", "...", "....", "..", ",,", "!?!?", "!!", ".....", ". . .", "…", "?!?", "!.",
                 ";;", "::", "!!!!!!", "? ?", "... ...", "!,"],
    "html": ["&amp;", "&quot;", "&apos;", "&lt;", "&gt;", "&nbsp;", "&eacute;", "&mdash;", "&#39;", "&#8217;",
             "<b>bold</b>", "<br/>", "<br>", "AT&amp;T", "AT&T", "S&P", "&AMP;", "fish &amp; chips", "<i>",
             "<a href=\"x\">", "&ndash;", "&uuml;ber", "<p class='x'>", "&copy;", "&lt;3"],
    "contractions": ["don't", "can't", "won't", "it's", "they're", "we've", "I'll", "he'd", "I'm", "y'all",
                     "o'clock", "ma'am", "rock 'n' roll", "gonna", "wanna", "cannot", "'tis", "'twas", "isn't",
                     "DON'T", "Can't", "shouldn't've", "ain't", "let's", "gotta", "lemme", "gimme", "c'mon",
                     "the dog's bone", "James'", "it’s", "don’t", "O'Brien", "d'Artagnan", "l'amour", "'em",
                     "li'l", "'cause", "nor'easter", "somethin'", "goin'", "ol'"],
    "web": ["www.example.com", "http://example.com/path", "https://t.co/xyz", "google.com", "a.b@c.com",
            "joe@mail.org", "@joe", "#tbt", "#food", "img_001.jpg", "photo.png", "file.txt", "index.html",
            "ftp.site.net", "Yahoo.com", "news.bbc.co.uk", "https://www.site.org/a?b=1&c=2", "<me@x.com>", "c++",
            "C#", "f#", "data.csv"],
    "brackets": ["(a dog)", "[sic]", "{x}", "(", ")", "[", "]", "{", "}", "( small )", "(2)", "[1]", "((x))",
                 "f(x)", "(s)", "-LRB-", "-RRB-", "<", ">", "<<", ">>"],
    "symbols": ["+", "=", "*", "/", "\\", "|", "~", "^", "%", "&", "@", "#", "_", "©", "®", "°", "×", "→", "•", "·",
                "**", "***", "\\*", "a/b", "and/or", "w/", "°F", "±", "§", "¶", "™", "∞", "♥", "★", "✓", "\x7f"],
    "spaces": ["\t", "  ", "\u00a0", "\u200b", "\u3000", "\u2009", "\ufeff", "   ", "\u200e", "\u00ad",
               "soft\u00adhyphen"],
    "emoji": ["😀", "🐶", "👍🏽", "🍕", "❤️", "🇺🇸", "👨‍👩‍👧", "a😀b", "𝐁old", "🎉🎉"],
}
CATEGORIES = sorted(INSERTS)


def _coco_caption(rng: random.Random) -> str:
    text = f"{rng.choice(SUBJECTS)} {rng.choice(ACTIONS)} {rng.choice(OBJECTS)} {rng.choice(PLACES)}".strip()
    style = rng.random()
    if style < 0.6:
        text = text[0].upper() + text[1:]
    elif style < 0.7:
        text = text.upper()
    elif style < 0.8:
        text = text.title()
    return text + rng.choice(ENDINGS)


def _insert(rng: random.Random, text: str, piece: str) -> str:
    words = text.split(" ")
    at = rng.randrange(len(words) + 1)
    glue = rng.choice([" ", " ", " ", ""])  # sometimes attached to a neighbouring word
    if at == len(words):
        return text + glue + piece
    if at == 0:
        return piece + glue + text
    return " ".join(words[:at]) + " " + piece + glue + " ".join(words[at:])


def corpus(n: int = 2500, seed: int = 20240601) -> list[str]:
    """``n`` captions, the same on every run (Python's ``random.Random`` is stable for a given seed)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        text = _coco_caption(rng)
        if i % 2:  # every other caption carries inserts, cycling through the categories so each gets its share
            first = CATEGORIES[(i // 2) % len(CATEGORIES)]
            for category in [first] + rng.sample(CATEGORIES, rng.randrange(3)):
                text = _insert(rng, text, rng.choice(INSERTS[category]))
        out.append(text)
    return out


def image_split(captions: list[str], per_image: int = 5) -> tuple[dict[int, str], dict[int, list[str]]]:
    """``(predictions, references)``: image i gets captions[5i:5i+4] as references and captions[5i+4] as its
    prediction (a leftover tail shorter than 5 is not used)."""
    predictions, references = {}, {}
    for image in range(len(captions) // per_image):
        group = captions[image * per_image : (image + 1) * per_image]
        references[image], predictions[image] = group[:-1], group[-1]
    return predictions, references
