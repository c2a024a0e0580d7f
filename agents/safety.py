"""The red-flag safety screen that runs on every patient answer: rules first, the model second.

Rules run regardless of the model, so an emergency is caught even when the model is down, weak or
wrong. The bar is zero missed emergencies; a false alarm costs an early stop and a clinician's
glance, a miss can cost a life, so where a mention is ambiguous the rules fire.

How an answer is screened:

1. Spelling. The answer is split into sentences, lower-cased, and every word is put through a
   spelling map: apostrophe-free contractions and txt-speak ("cant", "im", "wanna", "kms"),
   dropped g's ("bleedin") and one-slip typos of the clinical words the rules use ("ches",
   "pian", "shortnes", "sucidal", "siezure"). A few figures of speech that look like signs
   ("killing myself laughing", "can't breathe through my nose") are blanked out.
2. Signs. Each category has one rule made of named signs. A sign is a trigger pattern, optionally
   with companions that must also be present within a couple of sentences ("chest pain" needs
   breathlessness, sweating, radiation...; "fever" needs an infant's age).
3. Scope. A trigger or companion counts only if it is about the patient now. Within its clause
   (sentence split further at "but", "however", "now", "and I..."):
   - negated: a negation in the few words before it ("no chest pain", "I would never hurt
     myself"), or a bare "no"/"none"/"denied" answer right after it ("chest pain? no");
   - historical: a past cue ("years ago", "as a child", "used to", "is gone", "history of")
     with no sign of recurrence ("again", "now", "is back", "this morning"); long-standing cues
     ("for years", "gradually") count as historical for physical signs but never for self-harm;
   - someone else: an adult relative or friend named before it, with no "I"/"my chest"
     in between and no sign that it is happening now ("my father had a stroke" does not fire;
     "my husband is not breathing" does). A child (son, daughter, baby) is the patient: the
     caregiver is speaking for them. A sentence opening with "he"/"she" inherits the person of
     the sentence before.

Speed: every pattern is linear (bounded gaps, no nested repetition); each alternative of a pattern
carries literal anchors read off its parse tree and runs only when one occurs in the answer; a
companion is looked for only in the sentences around a trigger, and a scope verdict is memoised
on the text around the mention. A 50 KB answer screens in a few tens of milliseconds, adversarial
ones (thousands of negated mentions, no punctuation) included.
"""

from __future__ import annotations

import importlib
import re
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field

from tools.models.protocol import ChatMessage, ChatModel, ChatRequest

_sre_parser: Any = importlib.import_module("re._parser")  # internal to `re`; see `_anchors`
_sre: Any = importlib.import_module("re._constants")

ESCALATION_MESSAGE = (
    "Thank you for telling me. What you describe needs urgent attention. Please call your local "
    "emergency number (911 in the US) or go to the nearest emergency department now. If you are "
    "thinking about harming yourself, you can also call or text 988 (US) right away. "
    "This intake is stopping here so you can get help, and your care team will see what you told me."
)


class RedFlag(BaseModel):
    """A red flag found in one patient answer."""

    category: str = Field(description="e.g. 'cardiac', 'stroke', 'self_harm'.")
    description: str = Field(description="What the clinician should know, without a diagnosis.")
    turn_id: str
    evidence: str = Field(description="The sentence of the answer that raised it.")
    detected_by: str = Field(description="'rules' or the model id.")


# --------------------------------------------------------------------------------------------
# 1. Spelling: contractions, txt-speak, dropped g's and one-slip typos of the clinical words.
# --------------------------------------------------------------------------------------------

_SPELLINGS: dict[str, str] = {
    # Contractions without apostrophes, and the long forms of the ones the rules use.
    "cant": "can't", "cnt": "can't", "cannot": "can't", "caint": "can't", "carnt": "can't",
    "couldnt": "couldn't", "cudnt": "couldn't", "dont": "don't", "doesnt": "doesn't",
    "didnt": "didn't", "isnt": "isn't", "wasnt": "wasn't", "arent": "aren't", "werent": "weren't",
    "wont": "won't", "havent": "haven't", "hasnt": "hasn't", "hadnt": "hadn't",
    "shouldnt": "shouldn't", "wouldnt": "wouldn't", "aint": "isn't",
    "im": "i'm", "ive": "i've", "hes": "he's", "shes": "she's", "theyre": "they're",
    "thats": "that's", "whats": "what's", "theres": "there's", "youre": "you're",
    # Txt-speak.
    "u": "you", "ur": "your", "wanna": "want to", "wana": "want to", "wnt": "want", "wanto": "want to",
    "gonna": "going to", "gotta": "got to",
    "rn": "right now", "idk": "i don't know", "bc": "because", "cuz": "because", "coz": "because",
    "b4": "before", "2day": "today", "2nite": "tonight", "tonite": "tonight", "ppl": "people",
    "lil": "little", "alot": "a lot", "abit": "a bit", "pls": "please", "plz": "please", "srsly": "seriously",
    "kms": "kill myself", "unalive": "kill", "unaliving": "killing", "sewerslide": "suicide",
    "wk": "week", "wks": "weeks", "wkold": "week old", "mo": "month", "mos": "months", "mth": "month",
    "mths": "months", "mnth": "month", "mnths": "months", "hr": "hour", "hrs": "hours",
    "mins": "minutes", "tmp": "temp", "bub": "baby", "bubba": "baby", "bubs": "baby",
    # Run-together words.
    "chestpain": "chest pain", "chestpains": "chest pains", "cantbreathe": "can't breathe",
    "cantbreath": "can't breathe", "passedout": "passed out", "selfharm": "self harm",
    "heartattack": "heart attack", "shortofbreath": "short of breath",
    # Common misspellings more than one slip away.
    "seisure": "seizure", "seisures": "seizures", "seizer": "seizure", "seizers": "seizures",
    "siezer": "seizure", "sezure": "seizure", "seazure": "seizure", "ceasure": "seizure",
    "stomache": "stomach", "stomack": "stomach", "stumach": "stomach", "stomachache": "stomach ache",
    "chocking": "choking", "brething": "breathing", "breating": "breathing", "brethe": "breathe",
    "breth": "breath", "brth": "breath", "sucicidal": "suicidal", "suicidle": "suicidal",
    "sucidial": "suicidal", "suicidial": "suicidal", "suiside": "suicide", "suisidal": "suicidal",
    "hedache": "headache", "hedake": "headache", "headach": "headache", "hart": "heart",
    "anaphalaxis": "anaphylaxis", "anaphlaxis": "anaphylaxis", "anafylaxis": "anaphylaxis",
    "anaphylatic": "anaphylactic", "anaphalactic": "anaphylactic", "unconcious": "unconscious",
    "unconsious": "unconscious", "feaver": "fever", "fevar": "fever", "temprature": "temperature",
    "tempreture": "temperature", "bleading": "bleeding", "bledding": "bleeding", "vommiting": "vomiting",
    "vomitting": "vomiting", "vommitting": "vomiting", "throwin": "throwing", "pregnet": "pregnant",
    "pregnent": "pregnant", "prego": "pregnant", "preggo": "pregnant", "preggers": "pregnant",
    "testical": "testicle", "testicals": "testicles", "testicel": "testicle", "nutsack": "scrotum",
    "droopin": "drooping", "slurrin": "slurring", "collasped": "collapsed", "colapsed": "collapsed",
    "siezure": "seizure", "siezures": "seizures", "od'd": "overdosed",
    "tounge": "tongue", "tonge": "tongue", "throut": "throat",
    "thraot": "throat", "swolen": "swollen", "sweling": "swelling",
}  # fmt: skip

# The clinical words the rules use; each also matches its one-slip typos (a letter left out,
# doubled, two letters swapped, or, in longer words, a vowel for a vowel).
_VOCAB = (
    "chest pain pains painful pressure tightness tight heavy heaviness crushing squeezing radiating "
    "spreading breath breathe breathing breathless shortness sweating sweaty sweat sweats clammy "
    "nausea nauseous nauseated vomiting vomited dizzy lightheaded palpitations heart attack "
    "stroke face drooping droopy droop slurred slurring speech weakness weak numbness numb paralysed "
    "paralyzed vision blind sudden suddenly headache worst confused confusion disoriented "
    "suicidal suicide myself overdose overdosed overdosing killing hurting harming cutting living "
    "without throat tongue swelling swollen allergic reaction anaphylaxis anaphylactic hives wheezing "
    "bleeding blood bloody coughing throwing tarry stools soaking pads tampons hemorrhage haemorrhage "
    "fever feverish temperature newborn infant weeks month months unconscious unresponsive fainted "
    "collapse collapsed seizure seizures seizing convulsing convulsions passed pregnant pregnancy "
    "abdominal abdomen stomach cramping severe severely excruciating unbearable terrible testicle "
    "testicles testicular scrotum stiff neck rash purple drowsy gasping choking struggling "
    "difficulty trouble confused jaw shoulder arm left right swallow swallowing lips daughter "
    "breathless suffocating unresponsive epipen"
).split()

# One-slip variants that are ordinary words in their own right: never treated as typos.
_NOT_TYPOS = frozenset(
    "arming bind camping cheking coking crashing cushing difficult drop ever gaping hear heat lisp loving moth "
    "moths pans pins pissed rushing sadden seat seating seats selling sizing sodden stoke strike sweets sweety "
    "swilling threat tiff tools week wees welling".split()
)

_VOWELS = "aeiouy"


def _one_slip(word: str) -> Iterator[str]:
    """The one-slip variants of `word` (see `_VOCAB`)."""
    n = len(word)
    for i in range(n):
        if n >= 5:
            yield word[:i] + word[i + 1 :]  # a letter left out
        if n >= 4:
            yield word[:i] + word[i] + word[i:]  # a letter doubled
        if n >= 4 and i + 1 < n and word[i] != word[i + 1]:
            yield word[:i] + word[i + 1] + word[i] + word[i + 2 :]  # two letters swapped
        if n >= 6 and word[i] in _VOWELS:
            for v in _VOWELS:
                if v != word[i]:
                    yield word[:i] + v + word[i + 1 :]  # a vowel for a vowel


def _typo_map() -> dict[str, str]:
    vocab = set(_VOCAB)
    seen: dict[str, set[str]] = {}
    for word in vocab:
        for variant in _one_slip(word):
            if variant not in vocab and variant not in _NOT_TYPOS and len(variant) >= 3:
                seen.setdefault(variant, set()).add(word)
    # A variant two vocabulary words could have come from is ambiguous: left alone.
    return {variant: words.pop() for variant, words in seen.items() if len(words) == 1}


def _word_map() -> dict[str, str]:
    words = {**_typo_map(), **_SPELLINGS}
    # Dropped g's: "bleedin", "breathin".
    for word, canonical in [*words.items(), *((w, w) for w in _VOCAB)]:
        if word.endswith("ing") and word[:-1] not in words:
            words[word[:-1]] = canonical
    return words


_WORD_MAP = _word_map()
_TOKEN_SPLIT = re.compile(r"([a-z0-9]+(?:'[a-z]+)?)")
_APOSTROPHES = re.compile(r"[\u2018\u2019\u02bc`\u00b4]")
_REPEATS = re.compile(r"([a-z])\1{2,}")
# Long forms and phrases, rewritten in one pass to the short forms the rules use.
_PHRASES = {
    "can not": "can't", "could not": "couldn't", "do not": "don't", "does not": "doesn't", "did not": "didn't",
    "is not": "isn't", "are not": "aren't", "was not": "wasn't", "will not": "won't", "have not": "haven't",
    "has not": "hasn't", "i am": "i'm", "not able to": "can't", "unable to": "can't", "my self": "myself",
    "want 2": "want to",
}  # fmt: skip
_PHRASE = re.compile(r"\b(?:" + "|".join(re.escape(p) for p in _PHRASES) + r")\b")

# Figures of speech that look like signs; blanked out before the rules run. Kept deliberately
# narrow: each names the whole idiom, so a real sign in other words still fires.
_FIGURES_OF_SPEECH = re.compile(
    r"\b(?:"
    r"(?:kill\w*|killed) myself (?:laughing|with laughter)"
    r"|(?:want|wanted) to die (?:of|from) (?:embarrassment|boredom|laughter)"
    r"|laugh\w* so (?:hard|much) (?:that )?(?:i|he|she|we) (?:couldn't|can't) breathe"
    r"|(?:can't|couldn't|can barely|can hardly) breathe (?:through|out of|thru|from) "
    r"(?:my |his |her |the |one )?(?:nose|nostrils?)"
    r"|dying to (?:know|see|hear|try|meet|get|find out|go|tell)"
    r"|took my breath away|chest (?:cold|infection|congestion|x-?ray)|off my chest"
    r"|(?:heart|blood) (?:sank|sinks|froze|ran cold|boiled|boils|skipped a beat)"
    r"|(?:for|to prevent|to control|control|prevent) (?:my |his |her )?seizures"
    r"|(?:anti-?)?seizure (?:meds?|medications?|medicines?|pills|tablets|disorder|free|plan)"
    r"|anti-?seizure"
    r"|(?:i'm|he's|she's|is|am|are) anaphylactic to"
    r"|overdos\w* on (?:sugar|chocolate|caffeine|coffee|netflix|tv|candy|sweets)"
    r")"
)


def _normalise(text: str) -> str:
    text = _APOSTROPHES.sub("'", text.lower())
    text = _REPEATS.sub(r"\1\1", text)
    text = "".join([_WORD_MAP.get(part, part) for part in _TOKEN_SPLIT.split(text)])
    text = _PHRASE.sub(lambda m: _PHRASES[m.group()], text)
    if _FIGURES_OF_SPEECH_ANCHORS is None or any(anchor in text for anchor in _FIGURES_OF_SPEECH_ANCHORS):
        return _FIGURES_OF_SPEECH.sub(" ", text)
    return text


# --------------------------------------------------------------------------------------------
# 2. Signs: named patterns for clinical concepts, written on the normalised text.
# --------------------------------------------------------------------------------------------


def _p(*alternatives: str) -> str:
    """One alternation of the given patterns."""
    return "(?:" + "|".join(alternatives) + ")"


# A word between the two parts of a `_near` pattern: never a negation ("throat isn't swollen") or a
# turn to another time ("... before I die").
_GAP_WORD = (
    r"(?!(?:no|not|never|isn't|aren't|wasn't|weren't|don't|doesn't|didn't|hasn't|haven't|without|before|after|"
    r"than|when|unless)\b)[\w']+"
)


def _near(first: str, second: str, words: int = 3) -> str:
    """`first`, then `second` at most `words` words later (none a negation), within one sentence."""
    return rf"{first}(?:'s)?(?:[ ,/-]+{_GAP_WORD}){{0,{words}}}?[ ,/-]+{second}"


def _either(first: str, second: str, words: int = 3) -> str:
    return _p(_near(first, second, words), _near(second, first, words))


_SEVERE = _p(
    r"sever\w*", r"really bad", r"very bad", r"so bad", r"terrible", r"terribly", r"excruciating",
    r"intense", r"sharp", r"stabbing", r"awful", r"unbearable", r"agony", r"agoni[sz]ing", r"extreme",
    r"worst", r"horrible", r"doubled over", r"screaming", r"crying (?:in|with|from) pain",
    r"can't (?:stand up|walk|move)", r"(?:8|9|10|eight|nine|ten) ?(?:/|out of) ?10", r"sudden\w*",
    r"came on (?:all of a sudden|suddenly|out of nowhere)", r"out of nowhere", r"killing me",
    r"(?:extremely|very|really|so|incredibly|unbearably|super) (?:painful|sore|bad|strong|intense|heavy)",
    r"bad(?:ly)?",
)  # fmt: skip
_BREATHLESS = _p(
    r"short(?:ness)? of breath", r"sob", r"breathless\w*", r"out of breath", r"winded",
    r"can't (?:catch (?:my |his |her |a )?)?breath\w*", r"(?:hard|difficult|struggling) to breathe",
    r"(?:trouble|difficulty|struggling|problems?) (?:with )?breathing", r"breathing (?:is )?(?:hard|difficult|heavy)",
    r"gasping", r"wheez\w*", r"suffocat\w*",
)  # fmt: skip
_UNIT = r"(?:\s?(?:°|º|degrees?|deg)\s?(?:c|f|celsius|centigrade|fahrenheit)?|\s?(?:c|f|celsius|fahrenheit))"
_FEVER = _p(
    r"fever\w*", r"febrile", r"pyrexi\w*", r"high temp\w*", r"(?:running|runs|ran|has|have|had|with) a temp\b",
    r"burning up", r"hot to (?:the )?touch", r"feel(?:s|ing)? (?:very |really |so |super )?hot",
    r"(?:he's|she's|baby's|he is|she is|baby is|is|are|was|seems?) (?:very |really |so |super |burning )?hot"
    r"(?! (?:weather|day|today|outside|in here|water|drink|bath|shower|room|car))",
    r"(?:running|runs|ran|has|have|had|with|got) a (?:high )?temperature",
    r"(?<![\d.])(?:3[89]|4[0-2])[.,]\d(?!\d)",
    r"(?:temp|temperature)\b[^.!?\n\d]{0,24}?(?<![\d.])(?:3[89]|4[0-3])(?:[.,]\d+)?" + _UNIT + r"?(?![\d\w])",
    r"(?:temp|temperature)\b[^.!?\n\d]{0,24}?(?<![\d.])(?:100[.,][4-9]|10[1-7])(?:[.,]\d+)?" + _UNIT + r"?(?![\d\w])",
    r"(?<![\d.])(?:3[89]|4[0-2])(?:[.,]\d+)?" + _UNIT,
    r"(?<![\d.])(?:100[.,][4-9]|10[1-7])(?:[.,]\d+)?" + _UNIT,
)  # fmt: skip
_PREGNANCY = _p(
    r"pregnan\w*", r"\w+ (?:weeks?|months?) (?:along|gestation|into (?:my|the) pregnancy)",
    r"expecting (?:a baby|twins|a child|my first|our first|again)", r"(?:my|the) (?:bump|unborn)",
    r"(?:i'm|i am|we're|she's) expecting"
    r"(?! (?:to|a call|results|my results|an? (?:call|email|letter|answer|reply|response|package|delivery)))",
    r"(?:i'm|i am|she's|we're|at) (?:\d{1,2}|\w+)(?:\+\d)? ?(?:weeks?|wks?)"
    r"(?! (?:old|post|after|into|since|out|from|ago))",
    r"positive (?:pregnancy )?test", r"trimester", r"gestation\w*", r"due date",
    r"(?:missed|late) (?:my )?period",
)  # fmt: skip
_EXERTION = _p(
    r"run\w*", r"ran", r"jog\w*", r"sprint\w*", r"exercis\w*", r"work(?:ing|ed)? ?out", r"gym",
    r"marathon", r"race", r"training", r"climb\w*", r"hik\w*", r"swim\w*", r"cycl\w*", r"bike",
    r"football", r"soccer", r"sports?", r"match", r"game",
)  # fmt: skip

# Cardiac
_CHEST = r"(?:chest|heart|sternum|breast ?bone|rib ?cage)"
_CHEST_FEELING = _p(
    r"pain\w*", r"pressure", r"tight\w*", r"heav\w*", r"hurt\w*", r"aches?", r"aching", r"discomfort",
    r"squeez\w*", r"crush\w*", r"burn\w*", r"sore", r"agony", r"killing", r"constrict\w*", r"band",
    r"weight", r"elephant", r"stabbing", r"clench\w*", r"vice", r"vise",
)  # fmt: skip
_CHEST_DISCOMFORT = _p(
    _near(_CHEST, _CHEST_FEELING, 3),
    _near(_CHEST_FEELING, r"(?:in|on|across|around|over|behind|at|of|through) (?:\w+ ){0,4}?" + _CHEST, 1),
    r"(?:tight|heavy|sore|crushing|painful|squeezing|aching|burning) " + _CHEST,
    r"elephant (?:\w+ ){0,3}?(?:on|sitting on|standing on) (?:my )?chest",
    r"(?:squeez\w*|crush\w*|gripp\w*|clench\w*|stabb\w*) (?:my |the )?" + _CHEST,
)  # fmt: skip
_CARDIAC_COMPANION = _p(
    _BREATHLESS, r"sweat\w*", r"clammy", r"drenched", r"diaphore\w*", r"perspir\w*",
    r"radiat\w*",
    r"spread\w*",
    r"(?:goes|going|went|moving|moves|shooting|shoots|travel\w*) (?:down|up|into|to|through|across)",
    r"(?:down|into|up) (?:my|the|his|her) (?:left |right )?(?:arm|jaw|neck|shoulder|back)",
    r"(?:left|right) (?:arm|shoulder|jaw)",
    r"(?:arm|jaw|neck|shoulder)s? (?:\w+ )?(?:pain|hurt\w*|ache\w*|numb\w*|tingl\w*|heavy|weak\w*|dead)",
    r"crush\w*", r"squeez\w*", r"elephant", r"vice", r"vise", r"like a (?:weight|band|brick|ton)",
    r"nause\w*", r"feel(?:ing)? sick", r"vomit\w*", r"throw\w* up", r"threw up",
    r"light ?headed\w*", r"dizz\w*", r"faint\w*", r"pass(?:ing|ed)? out", r"black(?:ing|ed)? out",
    r"grey", r"gray", r"pale", r"(?:going to|gonna|about to) die", r"dying", r"doom",
    r"heart attack", r"palpitat\w*", r"heart (?:is )?(?:racing|pounding)",
)  # fmt: skip
_HEART_ATTACK_NOW = (
    r"(?<!about )(?<!of )(?<!avoid )(?<!prevent )"
    r"(?:having|having what feels like|is this|could this be|might be|"
    r"think (?:i'm|i am|it's|this is|i might be)(?: having)?) (?:a |an )?heart attack"
)

# Stroke
_FACE_DROOP = _p(
    _near(
        r"(?:face|mouth|smile|lips?|cheek|eyelid|(?:one side|half) of (?:my|his|her|the) face)",
        r"(?:droop\w*|sag\w*|dropp\w*|fallen|fell|lopsided|crooked|uneven|slack|numb\w*|paraly\w*|frozen|"
        r"twisted|weak\w*|pulled|(?:isn't|not|won't|can't|doesn't|stopped) (?:\w+ )?(?:mov\w*|work\w*))",
        3,
    ),
    r"(?:droop\w*|sag\w*|lopsided|crooked|uneven) (?:face|mouth|smile)",
    r"facial (?:droop\w*|weakness|numbness|paraly\w*)",
    _near(r"(?:droop\w*|sag\w*|lopsided|crooked|uneven|numb|paraly\w*|frozen)", r"(?:face|mouth|smile|lips?|cheek)", 3),
    r"face (?:\w+ ){0,3}?(?:weird|funny|strange|numb|tingl\w*|heavy|odd|droopy|different) "
    r"on (?:one|that|the (?:left|right)|my (?:left|right)) side",
)
_SPEECH_TROUBLE = _p(
    r"slurr\w*",
    _near(
        r"(?:speech|words|talking|speaking)",
        r"(?:slurred|garbled|jumbled|muddled|mumbled|nonsense|funny|strange|weird|wrong|drunk|thick|gibberish)",
        3,
    ),
    r"can't (?:get|find|form|say) (?:my |the |his |her |any )?words",
    r"(?:can't|couldn't) (?:speak|talk)(?! (?:to|about|with|for long|up|much|on the phone|english))",
    r"(?:trouble|difficulty|problems?|struggling) (?:with )?"
    r"(?:speaking|talking|finding (?:the )?words|getting (?:my |the )?words out|speech)",
    r"(?:can't|couldn't) (?:understand|make sense of) (?:what|anything|people|words|anyone)",
    r"(?:can't|couldn't) (?:remember|think of|find|get) (?:the |my |any |simple )?words",
    r"sound(?:s|ed|ing)? drunk",
    r"(?:not|isn't|wasn't|stopped) making (?:any )?sense",
    r"words? (?:came|coming|come|comes) out (?:wrong|jumbled|garbled|funny|weird)",
)  # fmt: skip
_ONE_SIDE = _p(
    r"(?:left|right|one|l|r) (?:side|arm|leg|half)",
    r"(?:one side|half) of (?:my|his|her|the) (?:body|face)",
    r"half (?:my|his|her) body",
    r"arm and leg", r"leg and arm", r"face and arm", r"arm and face",
)  # fmt: skip
_LIMB_WEAK = _p(
    r"weak\w*", r"numb\w*", r"paraly\w*", r"dead", r"limp", r"heavy", r"floppy", r"useless", r"no strength",
    r"lost (?:all |the |any )?(?:strength|feeling|sensation|control|use)",
    r"can't (?:move|lift|raise|feel|use|grip)", r"won't (?:move|work|lift)", r"(?:not|isn't|aren't) working",
    r"gave (?:out|way)", r"drag\w*",
)  # fmt: skip
_ONE_SIDED_WEAKNESS = _p(
    _either(_ONE_SIDE, _LIMB_WEAK, 4),
    r"sudden\w* (?:\w+ ){0,2}?(?:weak\w*|numb\w*|paraly\w*|can't move)",
    r"can't (?:\w+ ){0,2}?(?:lift|raise|move|feel|use) "
    r"(?:my|his|her|one|either|the) (?:left |right )?(?:arm|leg|side|hand)",
    _either(
        r"(?:left|right|one) hand",
        r"(?:weak\w*|dead|limp|useless|no strength|can't (?:grip|hold|use|move)|dropping things|won't work)",
        4,
    ),
)
_VISION_LOSS = _p(
    r"sudden\w* (?:\w+ ){0,2}?(?:lost|los(?:s|e|ing)|can't see|blind\w*|double vision|went dark|black)",
    r"(?:lost|los(?:e|ing|s of)) (?:the |my |his |her |all |some )?(?:vision|sight)",
    r"(?:went|gone|going) blind",
    r"blind (?:in|on) one",
    r"can't see (?:out of|from|with|in) (?:my |his |her |the |one )?(?:left |right )?eye",
    r"curtain (?:over|across|coming|came|coming down|falling)",
    r"(?:vision|sight) (?:\w+ ){0,2}?(?:went|gone|going|turned) (?:black|dark|blank|out|grey|gray)",
    r"sudden\w* (?:\w+ )?double vision", r"double vision (?:came on |started )?(?:sudden\w*|out of nowhere)",
)  # fmt: skip
_WORST_HEADACHE = _p(
    r"worst (?:\w+ ){0,2}?headache",
    r"headache (?:\w+ ){0,3}?(?:of (?:my|his|her|their) li(?:fe|ves)|i(?:'ve)? ever (?:had|felt)|ever)",
    r"thunderclap",
    r"(?:sudden\w*|explosive|exploding|worst) (?:\w+ ){0,2}?(?:headache|pain in (?:my|his|her|the) head)",
    r"headache (?:that |which )?(?:came on|hit|started|struck|began) "
    r"(?:\w+ ){0,3}?(?:sudden\w*|out of nowhere|all at once|in seconds|like a)",
    r"(?:like|as if) (?:i was |i'd been |i got |being |someone )?(?:hit|struck|kicked|smacked|whacked) "
    r"(?:\w+ ){0,2}?(?:in|on|over) the (?:back of the )?head",
)  # fmt: skip
_SUDDEN = r"(?:sudden\w*|out of nowhere|all of a sudden|all at once|out of the blue)"
_FACE_ONE_SIDE_CHANGE = _p(
    r"droop\w*", r"sag\w*", r"slid\w*", r"slipp\w*", r"fall\w*", r"fell", r"dropp\w*", r"down", r"numb\w*",
    r"weird", r"funny", r"strange", r"heavy", r"weak\w*", r"paraly\w*", r"frozen", r"not moving", r"crooked",
    r"lopsided", r"uneven", r"tingl\w*", r"dead", r"stiff",
)  # fmt: skip
_SUDDEN_CONFUSION = _p(
    r"sudden\w* (?:\w+ ){0,2}?"
    r"(?:confus\w*|disorient\w*|(?:not|isn't) making (?:any )?sense|can't understand|doesn't know where)",
    r"(?:confus\w*|disorient\w*) (?:\w+ ){0,3}?(?:sudden\w*|out of nowhere|all of a sudden)",
)

# Self-harm. Besides fixed phrases, two compositions catch the open-ended ways people say it:
# a wish/plan/thought frame followed within a few words by a death or self-harm object ("part of
# me wants to die", "thoughts that I should just end it"), and a loss-of-will frame followed by a
# life object ("no reason to carry on", "don't care if I live").
_WISH_FRAME = (
    r"(?:want\w*|wanna|wish\w*|rather|ready|going|gonna|plan\w*|think\w* (?:about|of)|thought (?:about|of)|"
    r"thoughts?(?: (?:of|about|that))?|urges?|tempted|feel(?:s|ing)? like|felt like|consider\w*|contemplat\w*|"
    r"part of me|tried|trying|attempt\w*|decided|about to|intend\w*|(?:would|'d) like|"
    r"(?:easier|better|simpler|best|kinder) (?:for (?:everyone|everybody|them|my family|all) )?(?:to|if)|"
    r"keep (?:thinking|wanting)|fantasi[sz]\w*|dream\w* (?:of|about)|pray\w*|hop(?:e|ing) (?:i|to)|deserve|"
    r"obsess\w* (?:about|over|with)|can't stop thinking about|research\w*|looking up|google\w*|searched)"
)
_DEATH_OBJECT = _p(
    r"die", r"dead", r"death", r"end(?:ing)? (?:it|it all|things|everything|my life)",
    r"(?:it|this|everything|things)(?: all)? (?:to )?(?:be over|end|stop)", r"be over",
    r"not (?:exist|be here|be alive|be around|wake up)", r"stop (?:existing|living|being alive)",
    r"(?:not|no longer) (?:existing|living|being (?:here|alive|around))", r"cease to exist",
    r"disappear\w*", r"vanish", r"be gone", r"sleep forever", r"never wake up",
    r"(?:kill|hurt|harm|cut|burn|injure|punish|starve)\w* myself", r"hang\w* myself", r"overdose",
    r"take (?:all )?(?:my|the) (?:pills|tablets|meds)", r"take my (?:own )?life", r"jump\w* (?:off|from|in front of)",
    r"give up on (?:life|living)", r"suicide", r"do it", r"go through with it",
)  # fmt: skip
_LOSS_FRAME = _p(
    r"no (?:reason|point|will|desire|wish) (?:to|in|of)", r"don't (?:want|wish|wanna|care) (?:to|if|whether)",
    r"no longer (?:want|wish|care) (?:to|if|whether)", r"can't see (?:a|the|any) (?:point|reason) (?:to|in|of)",
    r"can't (?:bear to|face)", r"(?:tired|sick|weary) of", r"done with", r"(?:had|'ve had|have had) enough of",
    r"nothing (?:left )?to live for", r"lost (?:the|my|all) (?:will|reason|desire) to", r"(?:not|isn't) worth",
    r"what's the point (?:of|in)", r"no longer",
)  # fmt: skip
_LIFE_OBJECT = (
    r"(?:live|living|life|alive|carry(?:ing)? on|go(?:ing)? on|keep(?:ing)? going|exist\w*|be here|being here|wake up|"
    r"waking up|another day|being alive|i (?:live|die|wake up|exist))"
)
_SELF_HARM = _p(
    r"suicid\w*", r"sewer ?slide", r"dark thoughts", r"(?:kill|end)(?:ing|ed)? (?:it|things) for myself",
    r"(?:kill\w*|end(?:ing|ed)?|hang\w*|shoot\w*|drown\w*|poison\w*|off(?:ing|ed)?|harm(?:ing|ed)?) myself",
    r"self[- ]?(?:harm\w*|injur\w*|mutilat\w*)",
    _near(_WISH_FRAME, _DEATH_OBJECT, 3),
    _near(_LOSS_FRAME, _LIFE_OBJECT, 3),
    r"(?:hurt|harm|cut|burn|injur)\w* myself (?:on purpose|deliberately|intentionally|again)",
    r"(?:been|keep|kept|started|start|am|i'm|was|using) (?:\w+ )?(?:hurt|harm|cut|burn|hit|punch|starv|injur|scratch)"
    r"\w* (?:myself|my (?:arms?|wrists?|legs?|thighs?|skin|stomach))",
    r"(?:cut|hurt|burn|harm|injur)\w* myself (?:\w+ ){0,6}?(?:do it again|again|to cope|to feel|for relief|to numb)",
    r"(?:scratch|pick|bit|hit|punch|bang|burn|cut)\w* (?:myself|my (?:arms?|legs?|skin|head|wrists?|thighs?)) "
    r"(?:\w+ ){0,4}?(?:until|till|til|so) (?:they|it|i) (?:bleed|bled|bruise|hurt)",
    r"cutting (?:again|my (?:arms?|wrists?|legs?|thighs?|skin))",
    r"relaps\w* (?:on|with|into) (?:sh|self[- ]?harm|cutting)",
    r"slit (?:my|his|her) wrists?",
    r"(?:want|wish|wanted|rather|prefer) (?:to be|i was|i were|i was just|i could be) dead",
    r"better off dead", r"better off (?:not (?:existing|alive|here|being here|around)|gone)",
    r"wish(?:ing)? (?:that )?i(?:'d| was| were| had| could| would)?(?: just| never| simply)?(?: be| have)? "
    r"(?:dead|die|gone|disappear\w*|been born|fall asleep and|not (?:here|alive|around|born|wake up|exist)|"
    r"never (?:been born|woken up|wake up|existed))",
    r"wish i (?:wasn't|weren't|didn't) (?:here|alive|around|born|exist|wake up)",
    r"(?:don't|no longer|never|didn't) (?:really |even |actually )?(?:want|wish|wanna|care) (?:to )?"
    r"(?:live|be alive|be here|exist|wake up|go on|keep going|carry on|keep living)",
    r"want (?:to )?(?:live|be alive|be here|exist|go on|keep going) (?:any ?more|any longer)",
    r"(?:sleep|go to sleep|fall asleep) (?:and (?:never|not) wake up|forever|for good|permanently)",
    r"(?:no|can't see (?:a|any)|there's no|see no) way out",
    r"(?:ways?|how|methods?|best way) to (?:die|kill myself|end (?:it|my life|things)|overdose|commit suicide)",
    r"painless (?:way|death)",
    r"(?:thought|thinking|planned|planning|worked out) (?:about )?how (?:i(?:'d| would| could| will| might)?|to) "
    r"(?:do it|end it|go through with it)",
    r"(?:can't|couldn't|don't think i can|not sure i can) (?:\w+ )?"
    r"(?:keep going|go on|carry on|keep living|cope any ?more)(?! (?:with|to|holiday|a trip|the|my|working|walking))",
    r"(?:there's |there is )?no point "
    r"(?:any ?more|in anything|to anything|in trying any ?more|in me being here|to my life|in my life)",
    r"(?:what's|what is) the point(?: of (?:anything|it all|me))?(?=\s*(?:$|[?.!,\n]|any ?more))",
    r"(?:nobody|no one|no-one) (?:\w+ ){0,2}?cares? (?:if|whether) i (?:live|die|exist|am alive)",
    r"(?:if|whether) i live or die", r"(?:so|until) (?:that )?i (?:can |could |will |would )?die",
    r"(?:done|finished) with (?:life|living|it all|everything|being alive)", r"giv(?:e|ing|en) up on (?:life|living)",
    r"(?:bought|got|getting|buying|tied|made|have) (?:a |the )?(?:rope|noose)", r"noose",
    r"(?:can't|don't want to) (?:go on|keep going|carry on|do this|take (?:it|this)) "
    r"(?:any ?more|any longer|like this)",
    r"(?:no|don't see (?:the|a|any)|can't see (?:the|a|any)|what's the|what is the|lost all) "
    r"(?:point|reason|purpose|will) (?:in |of |to )?"
    r"(?:living|life|live|going on|being alive|being here|carrying on|existing|trying|keep going|it all|anything)",
    r"(?:life|living) (?:is(?:n't)?|feels|seems|just feels) (?:\w+ )?"
    r"(?:worth living|pointless|meaningless|not worth it|hopeless)",
    r"not worth living",
    r"better off without me",
    r"(?:life|living|going on|carrying on|being alive|existence|existing)(?:'s)? (?:isn't|is not|not|ain't|no longer) "
    r"(?:\w+ )?worth (?:it|living|going on|the effort|the fight|anything)",
    r"(?:nobody|no one|no-one) (?:would|will|'d) (?:\w+ )?(?:miss|care|notice)",
    r"(?:i'm|i am|i feel like) (?:just |such )?a burden",
    r"burden (?:to|on) (?:everyone|everybody|my family|them|others|people)",
    r"end(?:ing)? it all", r"end(?:ing)? my (?:own )?life", r"(?:take|taking|took|taken) my (?:own )?life",
    r"(?:better off|happier|easier|better|relieved) (?:\w+ ){0,3}?if i (?:was(?:n't)?|were(?:n't)?|just|had|didn't)? ?"
    r"(?:dead|gone|died|around|here|alive|exist\w*|never born|not here|not around|killed myself)",
    r"(?:pills|tablets|meds|rope|gun|knife|razors?) (?:are |is )?(?:all )?(?:ready|lined up|saved up)",
    r"(?:thoughts?|thinking|think) (?:of|about) "
    r"(?:death|dying|ending (?:it|my life|things)|not being (?:here|alive|around))",
    r"not (?:going to |gonna )?be (?:here|around|alive) (?:\w+ )?"
    r"(?:any ?more|much longer|for much longer|for long|long)",
    r"disappear (?:forever|for good|and never come back)",
    r"(?:jump\w*|step\w*|throw\w* myself|walk\w*|driv\w*) in front of (?:a|the) (?:train|bus|car|truck|lorry)",
    r"jump\w* (?:off|from) (?:a |the |my )?(?:bridge|building|roof|cliff|balcony|tower|ledge|multi-?storey)",
    r"(?:wrote|writing|written) (?:a |my )?(?:suicide |goodbye )?(?:note|letters?) (?:to|for) (?:my family|everyone)",
    r"giving (?:away )?(?:all )?my (?:stuff|things|belongings) away",
)  # fmt: skip
_TOO_MUCH = _p(
    r"too many", r"a (?:whole|full|entire) (?:bottle|pack|packet|box|strip|load)",
    r"(?:all|the rest) of (?:my|the|his|her|them)", r"a (?:bunch|handful|load|lot|fistful) of",
    r"(?:\d{2,}|twenty|thirty|forty|fifty|dozens of|loads of) (?:of (?:my |the )?)?(?:pills|tablets|caps)",
    r"all (?:my|the|his|her|of) (?:pills|tablets|meds|medication|medicine)",
)  # fmt: skip
_OVERDOSE = _p(
    r"overdos\w*", r"od(?:'d|ed|ing)? on",
    r"(?:took|taken|take|taking|swallowed|swallow|downed|down) (?:\w+ ){0,2}?" + _TOO_MUCH,
    r"(?:saving|saved|stockpil\w*|hoard\w*|collecting|stash\w*) (?:up )?(?:my |the |some |enough )?"
    r"(?:pills|tablets|meds|medication|sleeping pills|painkillers)",
    r"(?:pills|tablets|meds) (?:\w+ ){0,2}?all at once",
    r"(?:took|taken|swallowed|downed) (?:\d{2,}|twenty|thirty|forty|fifty|a hundred|dozens|loads|lots|handfuls) "
    r"(?:of )?(?:my |the |his |her )?"
    r"(?!(?:minutes|mins|hours|days|weeks|years|seconds|steps|mg|mcg|ml|units|iu|percent)\b)[\w-]+",
)  # fmt: skip

# Anaphylaxis / severe allergic reaction
_EXPOSURE = _p(
    r"(?:after|since) (?:\w+ ){0,2}?"
    r"(?:eating|ate|taking|took|starting|having|being stung|sting|the (?:shot|injection|jab|vaccine|infusion))",
    r"stung", r"sting", r"bee", r"wasp", r"hornet", r"peanuts?", r"nuts?", r"shellfish", r"shrimp", r"prawns?",
    r"penicillin", r"amoxicillin", r"antibiotic\w*", r"new (?:medicine|medication|meds|pills?|drugs?|tablets?)",
    r"(?:after|since) (?:my |the |a |some |this |that )?(?:\w+ )?"
    r"(?:meds|medication|medicine|pills?|tablets?|injection|shot|jab|vaccine|food|meal|dinner|lunch)",
    r"allerg\w*", r"reaction", r"contrast", r"ate (?:some|a|an)",
)  # fmt: skip
_AIRWAY_TROUBLE = _p(
    _BREATHLESS, r"hoarse\w*", r"can't swallow", r"(?:trouble|difficulty|hard to) swallow\w*", r"tight chest",
    r"chest (?:is |feels )?tight", r"throat", r"can't talk", r"voice (?:is )?(?:changing|going|gone)",
)  # fmt: skip
_THROAT_OR_TONGUE = _p(
    _near(r"throat", r"(?:clos\w*|swell\w*|swollen|tight\w*|constrict\w*|narrow\w*|shut\w*|blocked|thick\w*)", 3),
    r"(?:swelling|swollen|tight|closing|tightening|closed) (?:of |in |up )?(?:my |his |her |the )?throat",
    _near(r"tongue", r"(?:swell\w*|swollen|puff\w*|huge|thick\w*|big|fat|blown up)", 3),
    r"(?:swollen|swelling|puffy) tongue",
)  # fmt: skip
_FACE_SWELLING = _p(
    _near(
        r"(?:lips?|face|eyes?|eyelids?|mouth|cheeks?)", r"(?:swell\w*|swollen|puff\w*|blow\w* up|blew up|balloon\w*)", 3
    ),
    r"(?:swollen|puffy|swelling|swelled) (?:up )?(?:lips?|face|eyes?|mouth)",
)  # fmt: skip
# How an allergy answer describes a usual reaction ("penicillin makes my throat swell"): not now.
_HABITUAL_REACTION = _p(
    r"(?:if|when|whenever|every time|each time) (?:i|he|she|they|we) "
    r"(?:eat|eats|take|takes|get|gets|have|has|touch|touches|am|is|are)",
    r"makes? (?:my|me|his|her)", r"gives? (?:me|him|her)", r"causes?", r"reactions? (?:is|are|includes?|was|were)",
)  # fmt: skip
_ALLERGIC_NOW = _p(
    r"(?:having|going into|in the middle of|think (?:i'm|i am|it's|this is)(?: having)?|is this|is having|"
    r"having what looks like) (?:a |an )?(?:\w+ )?(?:allergic reaction|anaphyla\w*)",
    r"(?:going into|in) anaphyla\w*", r"anaphyla\w*(?: shock| reaction)?(?=\s*(?:$|[,.!?\n]|right now|now|again))",
    r"(?:used|use|using|gave|give|giving|needed|had to use|have to use|need to use|injected|jabbed|administered|did) "
    r"(?:\w+ ){0,3}?(?:epi ?pens?|epinephrine|adrenaline|auvi-?q)",
)  # fmt: skip

# Bleeding
_NOT_BLEEDING = _p(
    r"pressure", r"sugar", r"tests?", r"work", r"thinners?", r"glucose", r"counts?", r"levels?", r"results?", r"type",
    r"donations?", r"vessels?", r"draws?", r"panel", r"orange", r"moon", r"bank",
)  # fmt: skip
_BLOOD = rf"blood(?!\s*{_NOT_BLEEDING})"  # "blood", not "blood pressure"
_SEVERE_BLEEDING = _p(
    r"(?:heavy|heavily|severe|massive|uncontroll\w*|profuse\w*|non-?stop|lots of|a lot of|tons of|so much|"
    r"way too much|loads of|pools? of) (?:\w+ )?(?:bleed\w*|" + _BLOOD + ")",
    r"bleed\w* (?:\w+ ){0,2}?"
    r"(?:heavily|a lot|badly|profusely|non-?stop|everywhere|like crazy|through|so much|all over|like a tap)",
    r"(?:won't|can't|couldn't|doesn't|isn't|hasn't|haven't|didn't|not|never) (?:\w+ ){0,2}?"
    r"stop(?:ped|ping)? (?:the |my |his |her )?bleed\w*",
    r"(?:can't|couldn't) (?:get|make) (?:the |my |his |her |it )?(?:bleed\w*|blood) (?:to )?stop",
    r"(?:(?:nose ?)?bleed\w*|blood) (?:\w+ ){0,8}?(?:won't|doesn't|isn't|hasn't|not|can't|couldn't|didn't|never) "
    r"(?:\w+ )?stop\w*",
    r"(?:nose ?)?bleed\w* (?:\w+ ){0,4}?for (?:over |more than |about |almost |nearly )?"
    r"(?:\d+|an?|one|two|twenty|thirty|forty) (?:hours?|minutes|mins)",
    r"(?:blood|bleeding) (?:is |keeps )?(?:pouring|gushing|spurting|pumping|streaming|everywhere)", r"blood everywhere",
    r"(?:pouring|gushing|spurting|pumping|streaming|pissing|dripping) (?:out )?(?:with )?(?:blood|bleeding)",
    r"(?:blood|bleed\w*|pouring|gushing) (?:\w+ ){0,3}?for (?:over |more than |about |almost |nearly )?"
    r"(?:\d+|an?|one|two|twenty|thirty|forty) (?:hours?|minutes|mins)",
    r"ha?emorrhag\w*", r"lost (?:a lot of|lots of|so much|too much) blood",
    r"(?:blood|bleed\w*) (?:is |keeps )?(?:coming |pouring |running |leaking |dripping |streaming )?(?:out )?"
    r"(?:of|from) (?:my |his |her |the |both )?(?:ears?|eyes?|head|mouth|nose|bottom|rectum|back passage|wound|cut)",
    r"(?:vomit\w*|throw\w* up|threw up|puk\w*|cough\w*|spit\w*|spat|bring\w* up|brought up|sick)(?: up)? "
    r"(?:\w+ ){0,3}?" + _BLOOD,
    r"blood (?:in|from) (?:\w+ ){0,2}?(?:vomit|sick|spit|sputum|phlegm|mucus|stool|stools|poo|poop|bowel movements?)",
    r"coffee[- ]?grounds?",
    r"(?:stools?|poo|poop|vomit|sick|toilet|bowl|diarrh\w*|nappy|diaper) (?:\w+ ){0,2}?"
    r"(?:full of|covered in|filled with|all|with lots of|with a lot of) (?:\w+ )?blood",
    r"bloody (?:vomit|sick|stool|stools|poo|poop|diarrh\w*|cough|phlegm|sputum)",
    r"black (?:and |, ?)?tarry",
    r"tarry",
    r"(?:stools?|poo|poop|bowel movements?|bms?) (?:\w+ ){0,3}?(?:black|tar|tarry|maroon)",
    r"black (?:\w+ )?(?:stools?|poo|poop|bowel movements?)",
    r"(?:pooping|passing|pooped|passed|pooing) (?:\w+ ){0,2}?(?:blood|clots|black|tar\w*)",
    r"soak\w* (?:\w+ ){0,3}?(?:pads?|tampons?|towels?|bandages?|dressings?|gauze|sheets)",
    r"(?:pads?|tampons?) (?:\w+ ){0,4}?(?:hour\w*|every (?:\d+|thirty|twenty|half an hour|few) min\w*)",
    r"(?:going|went|gone|changing|change|using) (?:through )?(?:\w+ ){0,3}?(?:pads?|tampons?) "
    r"(?:\w+ ){0,2}?(?:an|every|each|per|in an|in one) hour",
    r"clots (?:\w+ ){0,3}?(?:golf ?ball|plum|lemon|fist|egg|palm)",
)  # fmt: skip

# Infant fever
_SMALL_NUMBER_WORDS = r"one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|a few|few|a couple of|couple of"
_WEEKS_N = rf"(?:(?<![\d.])(?:[1-9]|1[0-3])(?!\d)|{_SMALL_NUMBER_WORDS}|thirteen|a)"
_DAYS_N = rf"(?:(?<![\d.])\d{{1,2}}(?!\d)|{_SMALL_NUMBER_WORDS})"
_MONTHS_N = (
    r"(?:(?<![\d.])(?:[0-3]|[12][.,]5)(?!\d)|one|two|three|an?|one and a half|two and a half|(?:1|2) and a half)"
)
_INFANT_AGE_UNIT = _p(
    _WEEKS_N + r"[- ]?(?:weeks?|wks?|wk)", _DAYS_N + r"[- ]?(?:days?|d)", _MONTHS_N + r"[- ]?(?:months?|mos?|mths?)"
)
_INFANT_AGE = _p(
    _INFANT_AGE_UNIT + r"[- ]?old",
    r"newborn", r"neonat\w*", r"new baby", r"infant", r"just (?:been )?born",
    r"(?:born|delivered) (?:\w+ ){0,2}?"
    r"(?:\d+ (?:days?|weeks?) ago|last week|yesterday|this week|a week ago|days ago|weeks ago|on)",
    r"(?:baby|son|daughter|boy|girl|child|kid|twins?|he|she|he's|she's|it|grandson|granddaughter|little one)(?:'s)?"
    r"[ ,(:-]+(?:(?:is|was|turned|aged?|only|just|about|almost|nearly|who is|who's|barely|not even|of) )*"
    + _INFANT_AGE_UNIT
    + r"\b(?! ago)",
)  # fmt: skip

# Breathing
_STRONG_BREATHING = _p(
    r"(?:can't|couldn't|can barely|can hardly|could barely|could hardly) (?:\w+ )?"
    r"(?:breathe|breath|breathing|catch (?:my |his |her |a )?breath|get (?:enough )?(?:air|a breath)|get my breath)",
    r"(?:not|isn't|stopped|wasn't|hasn't been|not been|isn't been|stops|quit) breathing",
    r"(?:barely|hardly) breath\w*",
    r"gasping (?:for|to)",
    r"fighting for (?:\w+ )?(?:air|breaths?)",
    r"stop\w* breathing",
    r"breath\w* (?:is |keeps |has |keeps on )?stop\w*",
    r"struggling (?:for|to get) (?:air|breath)",
    r"air hunger", r"suffocat\w*", r"choking", r"turning (?:blue|grey|gray|purple)",
    r"blu(?:e|ish) (?:lips|face|tinge|around)",
    _near(r"(?:lips|face|mouth|tongue)", r"(?:blu(?:e|ish)|gr[ae]y(?:ish)?|dusky|purpl\w*)", 3),
    r"(?:can only|only able to|can barely) (?:say|speak|get out|talk in) (?:a few|one or two|two or three|\w+) words?",
    r"too (?:breathless|short of breath|out of breath) to (?:talk|speak|finish|walk|stand|eat)",
    r"(?:breathless|short of breath|out of breath|wheezy|winded) (?:\w+ ){0,3}?"
    r"(?:can't|couldn't) (?:talk|speak|walk|finish|say)",
    r"can't (?:speak|talk|finish|say) (?:in )?(?:full |whole |a |complete )?(?:sentences?|words?)",
    _near(r"(?:ribs|chest|skin|neck|belly)", r"(?:sucking|pulling|caving|sinking) in", 2),
    r"grunting", r"nostrils flar\w*",
    r"severe(?:ly)? (?:short(?:ness)? of breath|breathless\w*)", r"(?:lips|tongue) (?:\w+ )?(?:turned|gone|going) blue",
)  # fmt: skip
_LABOURED_BREATHING = _p(
    r"(?:hard|difficult|impossible|struggling) to breathe",
    r"(?:trouble|difficulty|struggling|problems?) (?:with |in )?breathing",
    r"(?:so|really|very|extremely|severely|badly) (?:breathless|short of breath|out of breath|winded)",
    r"(?:hard|difficult|tough|rough|terrible) time (?:\w+ )?breathing",
    r"(?:every|each) breath (?:is|feels like) (?:a |an )?(?:struggle|effort|fight|battle)",
    r"breathing (?:is|feels like) (?:a |an )?(?:struggle|effort|fight|battle)",
    r"struggl\w* (?:for|with|to get) (?:\w+ )?(?:breath|air)",
    r"breathing (?:is|'s|has been|feels) (?:\w+ )?"
    r"(?:bad|terrible|awful|scary|worse|getting worse|not right|weird|strange|noisy)",
    r"breathing (?:is |really |very |so )*(?:labou?red|difficult|hard|shallow|fast and|noisy)", r"gasping",
    r"short(?:ness)? of breath (?:at rest|sitting|lying|even (?:at rest|sitting|lying))",
    r"out of breath (?:at rest|sitting still|just sitting)",
    r"wheez\w* (?:\w+ ){0,3}?(?:can't|won't|badly|really bad|inhaler (?:isn't|not|doesn't))",
    r"inhaler (?:isn't|is not|not|doesn't|didn't|hasn't) (?:\w+ )?(?:help\w*|work\w*)",
)  # fmt: skip

# Loss of consciousness or seizure
_COLLAPSE_OR_SEIZURE = _p(
    r"pass(?:ed|es|ing)? out",
    r"blacked out",
    r"black(?:ing)? out",
    r"faint(?:ed|ing|s)\b",
    r"(?:lost|los(?:e|ing|s of)) consciousness",
    r"unconscious",
    r"unresponsive",
    r"lost (?:my |his |her )?senses",
    r"went unconscious",
    r"(?:not|isn't|wasn't|stopped|won't|doesn't|didn't|can't|isn't) respond\w*",
    r"(?:won't|can't|couldn't|wouldn't) (?:\w+ )?wake (?:him|her|them|my \w+)",
    r"(?:he|she|they|baby|son|daughter|husband|wife|dad|mom|mum) (?:won't|isn't|can't|doesn't|wouldn't) "
    r"(?:\w+ )?wak(?:e|ing) up",
    r"(?:hard|difficult|impossible) to wake",
    r"collaps\w*",
    r"keeled over",
    r"seizures?",
    r"seizing(?! up)",
    r"convuls\w*",
    r"(?:is|was|started|been|keeps|began) fitting",
    r"(?:having|had|has|have) (?:a |another )?fits?",
    r"(?:shaking|jerking) (?:\w+ )?(?:uncontrollabl\w*|all over|and (?:not|isn't) respond\w*)",
    r"went (?:limp|floppy|stiff and)",
    r"(?:eyes )?rolled back",
    r"(?:came to|came round|woke up|woke|found myself|come round) (?:\w+ ){0,2}?on the (?:\w+ )?(?:floor|ground)",
    r"(?:don't|can't|doesn't|didn't) (?:know|remember) how (?:i|he|she) got (?:there|here)",
)  # fmt: skip

# Sepsis-like: fever with confusion, drowsiness, stiff neck or a rash that does not fade
_FEVER_WARNING = _p(
    r"confus\w*",
    r"disorient\w*",
    r"delirious",
    r"(?:not|isn't|wasn't) making (?:any )?sense",
    r"(?:hard|difficult|impossible|can't) (?:to )?wake",
    r"(?:very|really|extremely|so|unusually) (?:drowsy|sleepy|lethargic)", r"lethargic", r"floppy", r"unresponsive",
    r"stiff neck",
    r"neck (?:is |feels )?(?:\w+ )?stiff",
    r"(?:can't|won't) (?:bend|touch|move) (?:\w+ ){0,2}?(?:neck|chin)",
    r"rash (?:\w+ ){0,3}?(?:doesn't|does not|won't|didn't|not) (?:\w+ )?(?:fade|blanch|disappear|go away when)",
    r"purple (?:spots|rash|blotch\w*|dots|patches|marks)", r"mottled", r"(?:blotchy|grey|gray|blue) skin",
    r"(?:haven't|hasn't|not) (?:\w+ )?(?:peed|urinated|passed urine|wee\w*)", r"worst (?:i've|i have) ever felt",
)  # fmt: skip
_NON_FADING_RASH = _p(
    r"rash (?:\w+ ){0,3}?(?:doesn't|won't|didn't|isn't) (?:fade|blanch)\w*(?= *(?:$|[,.;!?\n]|and\b))",
    r"rash (?:\w+ ){0,3}?(?:doesn't|does not|won't|didn't|not) (?:\w+ )?(?:fade|blanch|disappear)(?: \w+){0,2}? "
    r"(?:when|under|with|if) (?:\w+ )?(?:press\w*|glass)",
    r"non-?blanching", r"glass test",
)  # fmt: skip
_STIFF_NECK = r"(?:stiff neck|neck (?:is |feels )?(?:\w+ )?stiff)"

# Pregnancy
_ABDOMINAL_PAIN = _p(
    _near(
        r"(?:abdom\w*|stomach|belly|tummy|pelvi\w*|womb|uterus|lower back|groin|side|ribs)",
        r"(?:pain\w*|hurt\w*|ache\w*|aching|cramp\w*|agony)",
        2,
    ),
    _near(
        r"(?:pain\w*|cramp\w*|ache|aching)",
        r"(?:in|on|under|below) (?:my |the )?(?:\w+ )?(?:abdom\w*|stomach|belly|tummy|pelvi\w*|side|womb|ribs)",
        1,
    ),
    r"cramp\w*", r"contractions",
)  # fmt: skip
_PREGNANCY_BLEEDING = _p(
    r"bleed\w*", _BLOOD, r"(?:passing|passed) (?:\w+ )?clots", r"gush\w* (?:of )?blood",
    r"blood (?:\w+ ){0,3}?(?:gush\w*|pour\w*|running down)",
    r"(?:heavy|a lot of|lots of) spotting", r"spotting (?:heavily|a lot|badly)",
)  # fmt: skip
_REDUCED_MOVEMENTS = _p(
    r"(?:baby|babies|twins) (?:\w+ ){0,3}?(?:isn't|hasn't|stopped|not|barely|hardly|haven't|hasn't been|less|doesn't) "
    r"(?:\w+ )?(?:moving|kicking|moved|kicked|move)",
    r"(?:reduced|decreased|less|fewer|no|slow\w*) (?:fetal |foetal |baby )?(?:movements?|kicks?|kicking)",
    r"(?:baby's |babys |fetal |foetal )?movements? (?:\w+ ){0,3}?"
    r"(?:slow\w*|reduc\w*|less|stopped|decreas\w*|fewer|weaker)",
    r"(?:haven't|hasn't|not|didn't|don't|can't|couldn't) (?:\w+ ){0,2}?(?:felt|feel|noticed|notice) "
    r"(?:the |my |any )?(?:baby|bub|babies|twins?)(?:'s)? (?:move|moving|movements?|kick\w*)",
)  # fmt: skip
_PRE_ECLAMPSIA_SIGNS = _p(
    r"(?:severe|bad|terrible|pounding|splitting|awful|worst|really bad|constant) (?:\w+ )?headache",
    r"(?:blurr\w*|flashing lights|spots|sparkles|seeing stars|changes in|problems with) "
    r"(?:\w+ ){0,2}?(?:vision|sight|eyes)",
    r"vision (?:\w+ ){0,2}?blurr\w*",
    r"(?:face|hands) (?:\w+ ){0,2}?(?:swollen|swelling|puffy)",
    r"swelling (?:in|of) (?:my )?(?:face|hands)",
)  # fmt: skip
_PREGNANCY_LOSS = (
    r"(?:having|think (?:i'm|i am) having|might be having|is this|could this be) (?:a )?(?:miscarriage|ectopic)|ectopic"
)

# Testicular
_TESTIS = r"(?:testic\w*|testes|testis|scrot\w*|(?:my|his|left|right|one) (?:balls?|nuts?|nads?))"
_TESTIS_PAIN = r"(?:pain\w*|hurt\w*|ache\w*|aching|agony|swell\w*|swollen|tender|twisted|torsion)"


class _Pattern:
    """A pattern that runs only the alternatives that could match.

    Python's regex engine tries every alternative of a large alternation at every word of the text.
    Each top-level alternative here carries its anchors, literal strings one of which every match of
    it contains (read off the regex parse tree); a C-speed substring search for them decides which
    alternatives to run, and only those are compiled together (cached) and scanned.
    """

    def __init__(self, pattern: str) -> None:
        self.alternatives = _top_level_alternatives(pattern)
        self.anchors = [_anchors(re.compile(alternative)) for alternative in self.alternatives]
        self.regex = self._compile(range(len(self.alternatives)))
        self._compiled: dict[tuple[int, ...], re.Pattern[str]] = {}

    def _compile(self, indexes: Iterable[int]) -> re.Pattern[str]:
        body = "|".join(self.alternatives[i] for i in indexes)
        return re.compile(rf"(?<![\w'])(?:{body})(?!\w)")

    def active(self, has: Callable[[str], bool]) -> tuple[int, ...]:
        """Indexes of the alternatives whose anchors occur (`has` tells whether a string does)."""
        return tuple(i for i, anchors in enumerate(self.anchors) if anchors is None or any(map(has, anchors)))

    def could_match(self, has: Callable[[str], bool]) -> bool:
        return any(anchors is None or any(map(has, anchors)) for anchors in self.anchors)

    def finditer(
        self, text: str, active: tuple[int, ...], start: int = 0, end: int | None = None
    ) -> Iterator[re.Match[str]]:
        """Matches of the `active` alternatives in `text[start:end]`."""
        if not active:
            return iter(())
        if active not in self._compiled:
            if len(self._compiled) > 512:
                self._compiled.clear()
            self._compiled[active] = self._compile(active)
        return self._compiled[active].finditer(text, start, len(text) if end is None else end)


def _top_level_alternatives(pattern: str) -> list[str]:
    """`(?:a|b|c)` -> [a, b, c]; any other pattern -> [pattern]."""
    if not (pattern.startswith("(?:") and _group_end(pattern, 0) == len(pattern) - 1):
        return [pattern]
    inner, parts, depth, start, i = pattern[3:-1], [], 0, 0, 0
    while i < len(inner):
        char = inner[i]
        if char == "\\":
            i += 2
            continue
        if char == "[":
            i = _class_end(inner, i)
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "|" and depth == 0:
            parts.append(inner[start:i])
            start = i + 1
        i += 1
    parts.append(inner[start:])
    return parts


def _group_end(pattern: str, open_at: int) -> int:
    depth, i = 0, open_at
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            i += 2
            continue
        if char == "[":
            i = _class_end(pattern, i)
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def _class_end(pattern: str, open_at: int) -> int:
    i = open_at + 1
    if i < len(pattern) and pattern[i] == "^":
        i += 1
    if i < len(pattern) and pattern[i] == "]":
        i += 1
    while i < len(pattern) and pattern[i] != "]":
        i += 2 if pattern[i] == "\\" else 1
    return i


def _anchors(regex: re.Pattern[str]) -> tuple[str, ...] | None:
    """Literal strings one of which every match of `regex` contains, read off its parse tree; None
    where the tree has no such set (or cannot be read), so the pattern always runs."""
    try:
        found = _required(list(_sre_parser.parse(regex.pattern, regex.flags)))
    except Exception:  # the parser is internal to `re`: if it changes, run every pattern
        return None
    return tuple(sorted(found)) if found else None


def _required(items: list[tuple[Any, Any]]) -> set[str] | None:
    """For a sequence of parsed regex items: a set of strings one of which every match contains."""
    options: list[set[str]] = []
    run: list[str] = []
    for op, av in [*items, (None, None)]:
        if op is _sre.LITERAL:
            run.append(chr(av))
            continue
        if run:
            # The longest word fragment of the literal: every match containing the literal contains it,
            # and a fragment can be looked up among the answer's distinct words.
            fragment = max(re.findall(r"[\w']+", "".join(run)), key=len, default="")
            if fragment:
                options.append({fragment})
            run = []
        sub: set[str] | None = None
        if op is _sre.SUBPATTERN:
            sub = _required(list(av[3]))
        elif op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT) and av[0] >= 1:
            sub = _required(list(av[2]))
        elif op is _sre.BRANCH:
            branches = [_required(list(branch)) for branch in av[1]]
            if all(branches):
                sub = set().union(*(b for b in branches if b))
        if sub:
            options.append(sub)
    if not options:
        return None
    # The most selective option: its shortest string as long as possible, then the fewest strings.
    return max(options, key=lambda option: (min(map(len, option)), -len(option)))


@dataclass(frozen=True)
class _With:
    """A companion a sign needs: present within `within` sentences of the trigger."""

    pattern: _Pattern
    within: int = 2


@dataclass(frozen=True)
class _Sign:
    """A trigger, the companions it needs, and a clause context that rules it out."""

    name: str
    trigger: _Pattern
    needs: tuple[_With, ...] = ()
    unless: re.Pattern[str] | None = None


@dataclass(frozen=True)
class _Rule:
    """One rule per category: it fires when any of its signs does."""

    category: str
    description: str
    signs: tuple[_Sign, ...]
    chronic_still_counts: bool = False  # long-standing ("for years") is still now


def _sign(name: str, trigger: str, *needs: _With, unless: str | None = None) -> _Sign:
    return _Sign(name, _Pattern(trigger), tuple(needs), _Pattern(unless).regex if unless else None)


def _with(pattern: str, within: int = 2) -> _With:
    return _With(_Pattern(pattern), within)


_RULES: tuple[_Rule, ...] = (
    _Rule(
        "cardiac",
        "Chest pain or pressure with breathlessness, sweating, nausea, dizziness or spread to arm/jaw",
        (
            _sign("chest discomfort with companion", _CHEST_DISCOMFORT, _with(_CARDIAC_COMPANION)),
            _sign("patient thinks it is a heart attack", _HEART_ATTACK_NOW),
        ),
    ),
    _Rule(
        "stroke",
        "Face droop, one-sided weakness, speech trouble, sudden vision loss, sudden confusion or worst headache",
        (
            _sign("face droop", _FACE_DROOP),
            _sign("speech trouble", _SPEECH_TROUBLE),
            _sign("one-sided weakness or numbness", _ONE_SIDED_WEAKNESS),
            _sign("sudden vision loss", _VISION_LOSS),
            _sign("worst or sudden headache", _WORST_HEADACHE),
            _sign("sudden confusion", _SUDDEN_CONFUSION),
            _sign(
                "face changed on one side",
                r"face|mouth|smile|cheek",
                _with(
                    r"(?:one|the (?:left|right)|my (?:left|right)|his (?:left|right)|her (?:left|right)|that|left|"
                    r"right) side"
                    r"|on the (?:left|right)|(?:left|right)[- ]sided",
                    0,
                ),
                _with(_FACE_ONE_SIDE_CHANGE, 0),
            ),
            _sign(
                "sudden neurological change",
                r"confus\w*|disorient\w*|numb\w*|weak\w*|paraly\w*|blind\w*|double vision|"
                r"(?:can't|couldn't) (?:\w+ )?(?:see|speak|talk|walk|move|lift|raise|feel|stand|grip)|"
                r"slurr\w*|lost (?:my |his |her )?(?:balance|vision|sight|speech)",
                _with(_SUDDEN, 0),
            ),
        ),
    ),
    _Rule(
        "self_harm",
        "Suicidal thoughts, wish to die, self-harm or an overdose (taken or planned)",
        (
            _sign("suicidal thoughts or self-harm", _SELF_HARM),
            _sign("overdose", _OVERDOSE),
        ),
        chronic_still_counts=True,
    ),
    _Rule(
        "anaphylaxis",
        "Throat or tongue swelling, or swelling/hives with breathing trouble or after an exposure",
        (
            _sign("throat closing or tongue swelling", _THROAT_OR_TONGUE, unless=_HABITUAL_REACTION),
            _sign(
                "face or lip swelling",
                _FACE_SWELLING,
                _with(_p(_AIRWAY_TROUBLE, _EXPOSURE)),
                unless=_HABITUAL_REACTION,
            ),
            _sign(
                "hives with breathing trouble",
                r"hives|welts|(?:rash|hives) (?:\w+ )?(?:all )?over",
                _with(_AIRWAY_TROUBLE),
                unless=_HABITUAL_REACTION,
            ),
            _sign(
                "allergic reaction with breathing trouble",
                r"allerg\w*(?: reaction)?|reacting",
                _with(_AIRWAY_TROUBLE, 0),
                unless=_HABITUAL_REACTION,
            ),
            _sign("allergic reaction now or adrenaline used", _ALLERGIC_NOW),
        ),
    ),
    _Rule(
        "bleeding",
        "Heavy or uncontrolled bleeding, blood vomited or coughed up, or black tarry stools",
        (
            _sign("severe bleeding", _SEVERE_BLEEDING),
            _sign(
                "bleeding with faintness",
                r"bleed\w*|" + _BLOOD,
                _with(r"faint\w*|dizz\w*|light ?headed\w*|pass(?:ing|ed)? out|black(?:ing)? out|pale|clammy", 1),
            ),
        ),
    ),
    _Rule(
        "infant_fever",
        "Fever in an infant under 3 months",
        (_sign("fever at infant age", _FEVER, _with(_INFANT_AGE)),),
    ),
    _Rule(
        "breathing",
        "Severe trouble breathing (cannot breathe, blue lips, gasping, cannot speak)",
        (
            _sign("cannot breathe", _STRONG_BREATHING),
            _sign("laboured breathing", _LABOURED_BREATHING, unless=_EXERTION),
        ),
    ),
    _Rule(
        "neuro",
        "Loss of consciousness, collapse, unresponsiveness or seizure",
        (_sign("collapse or seizure", _COLLAPSE_OR_SEIZURE),),
    ),
    _Rule(
        "sepsis",
        "Fever with confusion, drowsiness, stiff neck or a rash that does not fade",
        (
            _sign("fever with warning signs", _FEVER, _with(_FEVER_WARNING)),
            _sign("rash that does not fade", _NON_FADING_RASH),
            _sign("stiff neck with rash", _STIFF_NECK, _with(r"rash|spots")),
        ),
    ),
    _Rule(
        "pregnancy",
        "In pregnancy: bleeding, severe abdominal pain, reduced movements, or severe headache/vision change",
        (
            _sign("bleeding in pregnancy", _PREGNANCY_BLEEDING, _with(_PREGNANCY)),
            _sign("severe abdominal pain in pregnancy", _ABDOMINAL_PAIN, _with(_SEVERE, 0), _with(_PREGNANCY)),
            _sign("reduced fetal movements", _REDUCED_MOVEMENTS, _with(_PREGNANCY)),
            _sign("severe headache or vision change in pregnancy", _PRE_ECLAMPSIA_SIGNS, _with(_PREGNANCY)),
            _sign("possible pregnancy loss", _PREGNANCY_LOSS),
        ),
    ),
    _Rule(
        "testicular",
        "Sudden or severe testicular pain or swelling",
        (
            _sign(
                "sudden severe testicular pain",
                _TESTIS,
                _with(_TESTIS_PAIN, 0),
                _with(_p(_SEVERE, r"vomit\w*", r"throw\w* up", r"threw up"), 0),
            ),
            _sign("twisted testicle", r"(?:twisted|torsion of (?:the|my|his)) (?:testic\w*|ball)|testicular torsion"),
        ),
    ),
)

RED_FLAG_CATEGORIES: tuple[str, ...] = tuple(rule.category for rule in _RULES)
_FIGURES_OF_SPEECH_ANCHORS = _anchors(_FIGURES_OF_SPEECH)

# --------------------------------------------------------------------------------------------
# 3. Scope: negated, historical, or about someone else.
# --------------------------------------------------------------------------------------------

_SENTENCE_BREAK = re.compile(r"(?<=[.!?;])\s+|\n+")
_BARE_NO = re.compile(r"^(?:no|nope|none|never|denied|negative|nil|not really|n/a)\W*$", re.I)


def _cue(*alternatives: str) -> re.Pattern[str]:
    """A scope cue: any of the alternatives, as whole words."""
    return re.compile(r"\b" + _p(*alternatives) + r"\b")


# Clauses: a sentence split where it turns ("but", "now", "and I..."); scope cues stay inside one.
_CLAUSE_BREAK = re.compile(
    r"\n|;|\b"
    + _p(
        r"but(?! (?:that|it|this) (?:was|were|is|has been))", r"however", r"although", r"though", r"whereas",
        r"except", r"yet", r"then", r"now", r"these days", r"lately", r"since then",
        r"and (?=(?:i|i'm|i've|i'd|now|my|today|then|this|recently)\b)",
    )
    + r"\b"
)  # fmt: skip
_NEGATION = _cue(
    r"no(?! (?:idea|clue|one|body))", r"not(?! (?:sure|certain|only|just|even))", r"never", r"without", r"denies",
    r"deny", r"denied", r"don't(?! (?:know|think|understand|remember|care))", r"doesn't(?! (?:know|matter))",
    r"didn't(?! (?:know|think))", r"haven't", r"hasn't", r"hadn't", r"isn't", r"aren't", r"wasn't", r"weren't",
    r"won't", r"none", r"nothing like", r"nor", r"neither", r"free of", r"negative for", r"absence of", r"ruled out",
    r"rather than", r"instead of", r"no longer", r"no more",
)  # fmt: skip
# Where the negation window stops: a comma, a conjunction or a new subject.
_NEGATION_STOP = re.compile(
    r"[,()]|\b"
    + _p(
        r"and", r"so", r"because", r"cause", r"until", r"when", r"if", r"after", r"before", r"while", r"i", r"i'm",
        r"i've", r"i'd", r"i'll", r"it", r"it's", r"which", r"who", r"he", r"she", r"he's", r"she's", r"they",
        r"they're", r"there's",
    )
    + r"\b"
)  # fmt: skip
_EMPHATIC_NEVER = re.compile(
    r"^(?:[ ,]+[\w']+){0,3}?[ ,]+(?:like (?:this|that|it)|this (?:bad|severe|strong)|so bad|as bad)\b"
)
_AFTER_NEGATION = re.compile(
    r"^\s*(?:[:?\-\u2013]\s*|\s(?:is|are|was|were)\s+|\s*=\s*)"
    r"(?:no|none|nope|denied|negative|nil|absent|not present|gone|resolved|n/a)\b"
    r"|^\s+(?:is|are|has|have) (?:all )?(?:gone|resolved|cleared|stopped|better now|over)\b|^\s+went away\b"
)
_PAST = _cue(
    r"(?:\d+|a|one|two|three|four|five|six|seven|eight|nine|ten|several|many|a few|few|couple(?: of)?) "
    r"(?:years?|yrs?|decades?|months?) (?:ago|back|earlier)",
    r"years (?:ago|back|earlier)", r"last (?:year|month|summer|winter|spring|fall|autumn|decade)",
    r"in (?:19|20)\d\d", r"back in", r"at (?:age |the age of )?(?:[4-9]|[1-9]\d) months",
    r"(?:as|when (?:i|he|she) was) (?:a )?"
    r"(?:child|kid|baby|toddler|teen|teenager|young|little|younger|boy|girl|student|pregnant|"
    r"in (?:school|college|university|high school|my \w+))",
    r"when (?:i|he|she|we|they) (?:was|were) (?:\d+|young|younger|little|a kid|a baby|small)",
    r"in (?:my|his|her) (?:childhood|teens|twenties|thirties|20s|30s|youth)", r"childhood",
    r"used to", r"in the past", r"(?:a |any )?history of", r"previous(?:ly)?", r"once before",
    r"(?:is|are|has|have|'s) (?:all |now |completely |totally )?(?:gone|resolved|cleared|healed)"
    r"(?=\s*(?:$|[.,;!?\n]|now|away|since|for good))",
    r"went away", r"long (?:time )?ago",
    r"(?:from|since|after) (?:my|his|her|the) (?:old |last |previous |first )?"
    r"(?:stroke|heart attack|tia|mini[- ]stroke)",
    r"family history", r"runs? in (?:my|the|our) family",
    r"(?:died|passed away|passed) (?:of|from|with|due to|after|because|in|at|when)", r"passed away",
    r"at (?:the )?age (?:of )?\d+",
    r"(?:in|at) (?:his|her|their) (?:\d0s|forties|fifties|sixties|seventies|eighties|nineties)",
)  # fmt: skip
_CHRONIC = _cue(
    r"for (?:many |several |a few |\d+ |the (?:last|past) (?:\d+ |few |several )?)?years",
    r"(?:my|his|her) whole life", r"all (?:my|his|her) life",
    r"since (?:childhood|birth|i was (?:a )?(?:child|kid|baby|\d+))", r"always had", r"chronic", r"long-?standing",
    r"gradual(?:ly)?", r"slowly", r"over (?:the )?(?:past |last )?(?:years|months)", r"on and off for",
)  # fmt: skip
_RECURRENCE = _cue(
    r"again", r"now", r"right now", r"today", r"tonight", r"this (?:morning|afternoon|evening|week)", r"currently",
    r"at the moment", r"lately", r"recently", r"these days", r"(?:is|are|'s|it's|came|coming|come) back",
    r"returned", r"another (?:one|episode|seizure|attack|time)", r"just now", r"yesterday", r"last night",
    r"(?:minutes|hours|an hour|a minute) ago", r"started again",
)  # fmt: skip
_OTHER_PERSON = _cue(
    r"mother", r"mom", r"mum", r"mommy", r"mummy", r"mama", r"father", r"dad", r"daddy", r"papa", r"brother",
    r"sister", r"siblings?", r"friends?", r"bestie", r"wife", r"husband", r"hubby", r"partner", r"spouse",
    r"boyfriend", r"girlfriend", r"fianc\w*", r"uncle", r"aunt", r"auntie", r"aunty",
    r"grand(?:mother|ma|father|pa|parents?|dad|mum|mom)", r"gran", r"granny", r"nan", r"nana", r"nanna", r"cousin",
    r"neighbou?r", r"colleague", r"co-?worker", r"boss", r"roommate", r"flatmate", r"housemate", r"classmate",
    r"teammate", r"in-?laws?", r"\w+-in-law", r"step(?:mother|father|mom|dad|mum|brother|sister)", r"niece",
    r"nephew", r"relatives?", r"someone", r"somebody", r"parents?", r"family",
    r"dog", r"cat", r"puppy", r"kitten", r"pet", r"horse",
)  # fmt: skip
_CHILD = _cue(
    r"son", r"daughter", r"baby", r"child", r"kid", r"kids", r"infant", r"newborn", r"toddler", r"boy", r"girl",
    r"twins?", r"step(?:son|daughter)", r"grand(?:son|daughter|child)", r"little one",
)  # fmt: skip
_FIRST_PERSON = _cue(
    r"i", r"i'm", r"i've", r"i'd", r"i'll", r"me", r"myself",
    r"my (?:own )?(?:face|arms?|legs?|chest|head|throat|tongue|lips?|mouth|speech|words|vision|eyes?|side|body|"
    r"hands?|stomach|belly|tummy|heart|breathing|breath|skin|neck|back|blood|pads?|periods?|temperature|temp|"
    r"testicles?|balls|baby|son|daughter|child|kid|kids|boy|girl|newborn|infant|toddler|twins)",
)  # fmt: skip
_HAPPENING_NOW = _cue(
    r"right now", r"now", r"currently", r"at the moment", r"as we speak", r"today", r"tonight",
    r"this (?:morning|afternoon|evening)", r"just", r"suddenly", r"keeps", r"can't", r"won't", r"isn't", r"aren't",
    r"(?:is|are|'s) (?:\w+ )?(?:\w+ing|not|un\w+|blue|grey|gray|limp|floppy|confused|collapsed|cold|pale)",
)  # fmt: skip
_PRONOUN_START = re.compile(r"^\W*(?:he|she|they|his|her|their|he's|she's|they're|him)\b")
_NAMED_PERSON = re.compile(rf"{_OTHER_PERSON.pattern}|{_CHILD.pattern}")


_WORD = re.compile(r"[\w']+")
_SCOPE = 200  # characters either side of a mention that its scope cues are looked for in (clause-bounded)


class _Answer:
    """One answer, normalised, with its sentences and clauses located."""

    def __init__(self, answer: str) -> None:
        self.sentences = _sentences(answer)
        self._present: dict[str, bool] = {}
        self._words: str | None = None
        self._active: dict[int, tuple[int, ...]] = {}
        # Normalisation keeps line breaks, so the sentences can be normalised in one pass.
        self.text = _normalise("\n".join(" ".join(sentence.split("\n")) for sentence in self.sentences))
        self.sentence_starts = [0] + [m.end() for m in re.finditer("\n", self.text)]
        self.clause_starts = sorted({*self.sentence_starts, *(m.start() for m in _CLAUSE_BREAK.finditer(self.text))})
        self._pronoun_cache: dict[int, bool] = {}
        self._companions: dict[tuple[int, bool, int], bool] = {}
        self._scope_verdicts: dict[tuple[str, int, int, bool, str], bool] = {}

    def has(self, fragment: str) -> bool:
        """Whether a word fragment occurs in the normalised answer (memoised: patterns share anchors)."""
        if fragment not in self._present:
            if self._words is None:  # the distinct words: a much shorter string to search than the answer
                self._words = "\n".join(set(_WORD.findall(self.text)))
            self._present[fragment] = fragment in self._words if _WORD.fullmatch(fragment) else fragment in self.text
        return self._present[fragment]

    def finditer(self, pattern: _Pattern, start: int = 0, end: int | None = None) -> Iterator[re.Match[str]]:
        key = id(pattern)
        if key not in self._active:
            self._active[key] = pattern.active(self.has)
        return pattern.finditer(self.text, self._active[key], start, end)

    def _sentence_end(self, index: int) -> int:
        return self.sentence_starts[index + 1] - 1 if index + 1 < len(self.sentence_starts) else len(self.text)

    def sentence_of(self, position: int) -> int:
        return bisect_right(self.sentence_starts, position) - 1

    def evidence(self, sentence: int) -> str:
        """The patient's own sentence (normalisation keeps one line per sentence, so indexes agree)."""
        return (self.sentences[sentence] if sentence < len(self.sentences) else " ".join(self.sentences))[:300]

    def _clause(self, position: int) -> tuple[int, int]:
        index = bisect_right(self.clause_starts, position) - 1
        end = self.clause_starts[index + 1] if index + 1 < len(self.clause_starts) else len(self.text)
        return self.clause_starts[index], end

    def about_patient_now(self, match: re.Match[str], rule: _Rule, sign: _Sign | None = None) -> bool:
        """The mention is not negated, not historical and not about another adult."""
        clause_start, clause_end = self._clause(match.start())
        start = max(clause_start, match.start() - _SCOPE)
        end = min(clause_end, match.end() + _SCOPE)
        unless = sign.unless.pattern if sign is not None and sign.unless is not None else ""
        # The verdict depends only on the text around the mention (and, at a sentence start, on
        # the sentence before): repeated text is judged once.
        key = (self.text[start:end], match.start() - start, match.end() - start, rule.chronic_still_counts, unless)
        if clause_start == self.sentence_starts[self.sentence_of(clause_start)] and self._pronoun_other(clause_start):
            key = (*key[:4], unless + "\x00pronoun")
        if key not in self._scope_verdicts:
            self._scope_verdicts[key] = self._judge(match, rule, sign, start, end, clause_start)
        return self._scope_verdicts[key]

    def _judge(
        self, match: re.Match[str], rule: _Rule, sign: _Sign | None, start: int, end: int, clause_start: int
    ) -> bool:
        scope = self.text[start:end]
        recurrent = _RECURRENCE.search(scope)
        if not recurrent and (_PAST.search(scope) or (_CHRONIC.search(scope) and not rule.chronic_still_counts)):
            return False
        if (
            sign is not None
            and sign.unless is not None
            and sign.unless.search(scope)
            and not _HAPPENING_NOW.search(scope)
        ):
            return False
        before = self.text[start : match.start()]
        if _negated(before, self.text[match.end() : min(end, match.end() + 40)]):
            return False
        if _FIRST_PERSON.search(match.group()):  # "... better off without me" is about the patient
            return True
        return not self._about_someone_else(before, clause_start, scope)

    def _pronoun_other(self, clause_start: int) -> bool:
        """The sentence opens with he/she/they meaning an adult other than the patient: the person
        the nearest earlier sentence names ("my father", "my son") is who "he"/"she" is."""
        sentence = self.sentence_of(clause_start)
        if sentence not in self._pronoun_cache:
            verdict = False
            if _PRONOUN_START.match(self._sentence_text(sentence)):
                earlier = sentence - 1
                while earlier >= 0:
                    named = _NAMED_PERSON.search(self._sentence_text(earlier))
                    if named:
                        verdict = bool(_OTHER_PERSON.fullmatch(named.group()))
                        break
                    if not _PRONOUN_START.match(self._sentence_text(earlier)):
                        break
                    earlier -= 1
            self._pronoun_cache[sentence] = verdict
        return self._pronoun_cache[sentence]

    def _sentence_text(self, index: int) -> str:
        return self.text[self.sentence_starts[index] : self._sentence_end(index)]

    def _about_someone_else(self, before: str, clause_start: int, scope: str) -> bool:
        """An adult other than the patient is the subject, and it is not happening now."""
        others = list(_OTHER_PERSON.finditer(before))
        if others:
            someone_else = not _FIRST_PERSON.search(before, others[-1].end())
        else:
            sentence = self.sentence_of(clause_start)
            someone_else = (
                clause_start == self.sentence_starts[sentence]
                and self._pronoun_other(clause_start)
                and not _FIRST_PERSON.search(before)
            )
        return someone_else and not _HAPPENING_NOW.search(scope)

    def near_companion(self, need: _With, rule: _Rule, sentence: int) -> bool:
        """The companion occurs, about the patient now, within `need.within` sentences of `sentence`."""
        first, last = max(0, sentence - need.within), min(len(self.sentence_starts) - 1, sentence + need.within)
        return any(self._companion_in(need, rule, index) for index in range(first, last + 1))

    def _companion_in(self, need: _With, rule: _Rule, sentence: int) -> bool:
        """The companion occurs in sentence `sentence`, about the patient now (each sentence scanned once)."""
        key = (id(need.pattern), rule.chronic_still_counts, sentence)
        if key not in self._companions:
            matches = self.finditer(need.pattern, self.sentence_starts[sentence], self._sentence_end(sentence))
            self._companions[key] = any(self.about_patient_now(m, rule) for m in matches)
        return self._companions[key]


def _sentences(text: str) -> list[str]:
    """The sentences of an answer, exactly as written; a bare "No." answering a question joins it."""
    if "?" not in text:
        return [piece.strip() for piece in _SENTENCE_BREAK.split(text) if piece.strip()]
    spans: list[tuple[int, int]] = []
    start = 0
    for end, next_start in [*((m.start(), m.end()) for m in _SENTENCE_BREAK.finditer(text)), (len(text), len(text))]:
        piece = text[start:end]
        a, b = start + len(piece) - len(piece.lstrip()), start + len(piece.rstrip())
        start = next_start
        if a >= b:
            continue
        if spans and text[spans[-1][1] - 1] == "?" and _BARE_NO.match(text[a:b]):
            spans[-1] = (spans[-1][0], b)
        else:
            spans.append((a, b))
    return [text[a:b] for a, b in spans]


def _negated(before: str, after: str) -> bool:
    """A negation in the few words before the mention (up to a comma, conjunction or new subject),
    or a bare "no"/"none" right after it ("chest pain: no")."""
    if _AFTER_NEGATION.search(after):
        return True
    window = before[-60:]
    stops = list(_NEGATION_STOP.finditer(window))
    if stops:
        window = window[stops[-1].end() :]
    negations = list(_NEGATION.finditer(window))
    if not negations:
        return False
    negation = negations[-1]
    word = negation.group()
    if word == "never" and _EMPHATIC_NEVER.search(after):
        return False  # "never had pain like this"
    return not (word == "without" and re.search(r"\b(?:can't|couldn't|not|never)\b", window[: negation.start()]))


def _fires(answer: _Answer, rule: _Rule) -> int | None:
    """The sentence index where `rule` fires, or None."""
    for sign in rule.signs:
        # Cheapest first: the trigger's anchors, then whether every companion occurs at all.
        if not sign.trigger.could_match(answer.has):
            continue
        if any(not need.pattern.could_match(answer.has) for need in sign.needs):
            continue
        for match in answer.finditer(sign.trigger):
            sentence = answer.sentence_of(match.start())
            if all(answer.near_companion(need, rule, sentence) for need in sign.needs) and answer.about_patient_now(
                match, rule, sign
            ):
                return sentence
    return None


def screen_rules(answer: str, turn_id: str) -> list[RedFlag]:
    """Red flags the rules find in one answer (one per category)."""
    screened = _Answer(answer)
    flags: list[RedFlag] = []
    for rule in _RULES:
        sentence = _fires(screened, rule)
        if sentence is not None:
            flags.append(
                RedFlag(
                    category=rule.category,
                    description=rule.description,
                    turn_id=turn_id,
                    evidence=screened.evidence(sentence),
                    detected_by="rules",
                )
            )
    return flags


# --------------------------------------------------------------------------------------------
# Measuring the rules against a labelled message set.
# --------------------------------------------------------------------------------------------

MessageKind = Literal[
    "positive", "negated", "historical", "third_person", "typo", "caregiver", "benign", "ambiguous_benign"
]


class RedFlagCase(BaseModel):
    """One labelled patient message (fixtures/red_flags/messages.yaml)."""

    text: str
    expected: bool
    category: str | None = None
    kind: MessageKind
    known_false_alarm: bool = Field(default=False, description="A negative the rules are known to flag.")
    note: str = ""


class CaseResult(BaseModel):
    """What the rules did with one case."""

    case: RedFlagCase
    flagged: list[str] = Field(description="Categories the rules raised.")

    @property
    def outcome(self) -> Literal["TP", "FN", "FP", "TN"]:
        if self.case.expected:
            return "TP" if self.flagged else "FN"
        return "FP" if self.flagged else "TN"


class CategoryRecall(BaseModel):
    category: str
    positives: int
    caught: int
    same_category: int = Field(description="Caught under the expected category (not just any).")

    @property
    def recall(self) -> float:
        return self.caught / self.positives if self.positives else 1.0


class ConfusionTable(BaseModel):
    """Outcomes of the rules on a message set: the bar is zero false negatives."""

    results: list[CaseResult]

    def _count(self, outcome: str) -> int:
        return sum(r.outcome == outcome for r in self.results)

    @property
    def tp(self) -> int:
        return self._count("TP")

    @property
    def fn(self) -> int:
        return self._count("FN")

    @property
    def fp(self) -> int:
        return self._count("FP")

    @property
    def tn(self) -> int:
        return self._count("TN")

    @property
    def misses(self) -> list[CaseResult]:
        return [r for r in self.results if r.outcome == "FN"]

    @property
    def false_alarms(self) -> list[CaseResult]:
        return [r for r in self.results if r.outcome == "FP"]

    @property
    def per_category(self) -> list[CategoryRecall]:
        rows: dict[str, CategoryRecall] = {}
        for r in self.results:
            if not r.case.expected:
                continue
            name = r.case.category or "(none)"
            row = rows.setdefault(name, CategoryRecall(category=name, positives=0, caught=0, same_category=0))
            row.positives += 1
            row.caught += bool(r.flagged)
            row.same_category += name in r.flagged
        return [rows[name] for name in sorted(rows)]

    def render(self) -> str:
        total = len(self.results)
        lines = [
            f"Red-flag rules on {total} messages",
            "",
            "                 flagged   not flagged",
            f"  expected       TP {self.tp:4d}   FN {self.fn:4d}",
            f"  not expected   FP {self.fp:4d}   TN {self.tn:4d}",
            "",
            f"  recall {self._ratio(self.tp, self.tp + self.fn)}   "
            f"specificity {self._ratio(self.tn, self.tn + self.fp)}   "
            f"precision {self._ratio(self.tp, self.tp + self.fp)}",
            "",
            "  category        positives  caught  recall  same-category",
        ]
        for row in self.per_category:
            lines.append(
                f"  {row.category:<15} {row.positives:9d}  {row.caught:6d}  {row.recall:6.0%}  {row.same_category:13d}"
            )
        lines += ["", f"  Missed ({self.fn}):"] + [self._line(r) for r in self.misses]
        lines += ["", f"  False alarms ({self.fp}):"] + [self._line(r) for r in self.false_alarms]
        return "\n".join(lines)

    @staticmethod
    def _ratio(num: int, den: int) -> str:
        return f"{num / den:.1%}" if den else "n/a"

    @staticmethod
    def _line(result: CaseResult) -> str:
        flagged = ",".join(result.flagged) or "-"
        known = " (known)" if result.case.known_false_alarm else ""
        return f"    [{result.case.kind}] {result.case.text!r} -> {flagged}{known}"


def evaluate(cases: Iterable[RedFlagCase]) -> ConfusionTable:
    """Run the rules on every case and tabulate the outcomes."""
    return ConfusionTable(
        results=[
            CaseResult(case=case, flagged=[flag.category for flag in screen_rules(case.text, "eval")]) for case in cases
        ]
    )


def load_red_flag_cases(path: Path) -> list[RedFlagCase]:
    """The labelled messages of a YAML file with a top-level `messages:` list."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return [RedFlagCase.model_validate(item) for item in data["messages"]]


# --------------------------------------------------------------------------------------------
# The model's second opinion: it can add a red flag the rules missed, never remove one.
# --------------------------------------------------------------------------------------------


class SafetyAssessment(BaseModel):
    """The model's second opinion on one answer."""

    red_flag: bool = Field(description="True only if the answer describes a possible emergency happening now.")
    category: str = Field(default="", max_length=40)
    reason: str = Field(default="", max_length=200)


SAFETY_SYSTEM = (
    "You screen a patient's message in a pre-visit intake for emergencies happening now: chest pain "
    "with breathlessness or sweating, stroke signs, suicidal thoughts or self-harm, anaphylaxis, severe "
    "bleeding, fever in an infant under 3 months, severe trouble breathing, loss of consciousness or "
    "seizure, fever with confusion or a stiff neck or a rash that does not fade, bleeding or severe pain "
    "in pregnancy, sudden severe testicular pain. A caregiver describing their child counts as the patient. "
    "Negated, past or third-person mentions are not emergencies. Do not diagnose. Reply with JSON only."
)


async def screen_model(model: ChatModel, question: str, answer: str, turn_id: str) -> list[RedFlag]:
    """The model check; raises `ModelError` for the caller to record."""
    request = ChatRequest(
        task="safety.check",
        messages=[
            ChatMessage(role="system", content=SAFETY_SYSTEM),
            ChatMessage(role="user", content=f"Question: {question}\nPatient: {answer[:1500]}"),
        ],
        max_new_tokens=96,
    )
    reply = await model.complete(request, SafetyAssessment)
    if not reply.value.red_flag:
        return []
    return [
        RedFlag(
            category=reply.value.category or "model",
            description=reply.value.reason or "The model check judged this answer a possible emergency.",
            turn_id=turn_id,
            evidence=answer[:300],
            detected_by=reply.model_id,
        )
    ]
