"""The deployment ``mailbot serve`` runs when no ``--app`` is given."""

from mailbot import Mailbot
from mailbot.bots.comments import CommentsBot
from mailbot.bots.inspector import InspectorBot

# Comments first: the default bot of a conversation made without naming one. The inspector's
# temporary addresses live on inspect.<domain> (mailbot inspector new).
app = Mailbot(bots=[CommentsBot, InspectorBot])
