// i18n.js — English and French. The language comes from a choice saved in
// this browser (localStorage: a preference, not a secret), else from the
// browser's languages (navigator.languages), else English. The brief's users
// write French, so any "fr*" language picks French.
//
// Static markup names its strings with data-i18n="key" (text) and
// data-i18n-attr="attr:key;attr2:key2"; views built in JS call t() and are
// rebuilt when the language changes.

const LANG_KEY = 'relay.lang';

const en = {
  skip: 'Skip to content',
  close: 'Close',
  cancel: 'Cancel',
  save: 'Save',
  loading: 'Loading…',
  retry: 'Retry',
  'lang.label': 'Language',
  'nav.label': 'Main',
  'nav.webhooks': 'Webhooks',
  'nav.deliveries': 'Deliveries',
  'nav.settings': 'Settings',
  signout: 'Sign out',
  'who.operator': 'Operator',
  'who.owner': 'Owner: {owner}',
  'who.ownerUnknown': 'Owner token',
  'signin.title': 'Sign in',
  'signin.intro': 'Use an API token: the operator token, or an owner token made with relay tokens create.',
  'signin.token': 'API token',
  'signin.hint': 'Kept for this browser tab only (session storage).',
  'signin.submit': 'Sign in',
  'signin.empty': 'Enter a token.',
  'signin.wrong': 'Wrong token: the server refused it ({reason}).',
  'signin.unreachable': 'The server cannot be reached: {reason}',
  'signin.expired': 'Your token is no longer accepted. Sign in again.',
  'paused.banner': 'Deliveries are paused{reason}. Nothing is lost: they wait until resumed.',

  'webhooks.title': 'Webhooks',
  'webhooks.new': 'New webhook',
  'webhooks.empty': 'No webhooks yet. Create one to start receiving events.',
  'webhooks.caption': 'Your webhooks',
  'col.name': 'Name',
  'col.url': 'URL',
  'col.events': 'Events',
  'col.status': 'Status',
  'col.actions': 'Actions',
  'col.owner': 'Owner',
  'owner.operator': 'operator',
  'webhook.rename': 'Rename {name}',
  'webhook.renameHint': 'Enter to save, Escape to cancel',
  'webhook.renamed': 'Renamed to “{name}”.',
  'webhook.nameLabel': 'New name for {name}',
  'webhook.toggle': 'Enabled: {name}',
  'webhook.enabled': 'Enabled',
  'webhook.disabled': 'Disabled',
  'webhook.nowEnabled': '“{name}” is enabled.',
  'webhook.nowDisabled': '“{name}” is disabled.',
  'webhook.disabledReason': 'Disabled: {reason}',
  'webhook.failing': '{n} failures in a row',
  'webhook.lastError': 'Last error: {error}',
  'action.edit': 'Edit',
  'action.test': 'Test',
  'action.delete': 'Delete',
  'action.editLabel': 'Edit {name}',
  'action.testLabel': 'Send a test event to {name}',
  'action.deleteLabel': 'Delete {name}',
  'test.sent': 'Test sent — {code} in {ms} ms',
  'test.failed': 'Failed: {reason}',
  'test.httpStatus': 'HTTP {code}',
  'delete.title': 'Delete webhook',
  'delete.confirm': 'Are you sure? “{name}” will be deleted with its delivery history. This cannot be undone.',
  'delete.ok': 'Delete',
  'delete.done': '“{name}” was deleted.',

  'modal.new': 'New webhook',
  'modal.edit': 'Webhook “{name}”',
  'tab.create': 'Create',
  'tab.edit': 'Edit',
  'tab.stats': 'Stats',
  'tabs.label': 'Webhook',
  'form.name': 'Name',
  'form.namePlaceholder': 'Slack notifications',
  'form.url': 'URL',
  'form.urlHint': 'The endpoint that receives the POST requests. HTTPS only.',
  'form.urlHintHTTP': 'http:// is accepted on this server (allow_http is on: development only).',
  'form.events': 'Events',
  'form.eventsHint': 'Pick event types, or add a pattern such as thread.* (every thread event) or * (everything).',
  'form.noEventTypes': 'No events have been emitted yet: add the types or patterns you expect.',
  'form.pattern': 'Add an event type or pattern',
  'form.patternPlaceholder': 'thread.*',
  'form.addPattern': 'Add',
  'form.format': 'Format',
  'form.format.json': 'JSON (signed, Standard Webhooks)',
  'form.format.slack': 'Slack message',
  'form.format.discord': 'Discord message',
  'form.create': 'Create webhook',
  'form.save': 'Save changes',
  'form.saved': 'Changes to “{name}” saved.',
  'form.created': '“{name}” was created.',
  'form.fixErrors': 'Please correct the highlighted fields.',
  'err.required': 'This field is required.',
  'err.urlInvalid': 'Enter a full URL, such as https://example.com/hooks.',
  'err.urlHTTPS': 'The URL must use https://.',
  'err.urlScheme': 'Only https:// URLs are accepted.',
  'err.eventsRequired': 'Choose at least one event or add a pattern.',
  'err.pattern': '“{p}” is not an event type or pattern (use thread.created, thread.* or *).',
  'secret.title': 'Webhook created',
  'secret.text': 'This is the signing secret. It is shown only once: copy it now and store it with the receiver.',
  'secret.label': 'Signing secret',
  'secret.copy': 'Copy',
  'secret.copied': 'Copied!',
  'secret.copyFailed': 'Copy failed: select the text and copy it by hand.',
  'secret.done': 'Done',
  'secret.hidden': 'The secret was shown when the webhook was created and cannot be shown again.',

  'stats.h24': 'Last 24 hours',
  'stats.d7': 'Last 7 days',
  'stats.deliveries': 'Deliveries',
  'stats.successRate': 'Success rate',
  'stats.p50': 'p50 duration',
  'stats.p95': 'p95 duration',
  'stats.backlog': 'Waiting now',
  'stats.chart': 'Deliveries per hour, last 24 hours',
  'stats.chartEmpty': 'No deliveries in the last 24 hours.',
  'stats.chartBar': '{hour}: {ok} succeeded, {failed} failed, {pending} pending',
  'stats.latest': 'Latest attempts',
  'stats.latestEmpty': 'No attempts yet. Use Test to send one.',
  'stats.allDeliveries': 'See all deliveries',
  'col.time': 'Time',
  'col.event': 'Event',
  'col.code': 'Code',
  'col.duration': 'Duration',
  'col.error': 'Error',
  'col.attempts': 'Attempts',
  'col.webhook': 'Webhook',
  'col.attempt': 'Attempt',
  'col.outcome': 'Outcome',
  'col.retryAfter': 'Retry-After',

  'status.pending': 'Pending',
  'status.delivering': 'Delivering',
  'status.succeeded': 'Succeeded',
  'status.failed': 'Failed',
  'events.all': 'all events',

  'deliveries.title': 'Deliveries',
  'deliveries.live': 'New attempts appear automatically.',
  'deliveries.empty': 'No deliveries match these filters.',
  'deliveries.caption': 'Delivery log',
  'filter.status': 'Status',
  'filter.days': 'Period',
  'filter.webhook': 'Webhook',
  'filter.eventType': 'Event type',
  'filter.any': 'All',
  'filter.day1': 'Last 24 hours',
  'filter.days7': 'Last 7 days',
  'filter.days30': 'Last 30 days',
  'filter.days90': 'Last 90 days',
  'filter.reset': 'Reset filters',
  'deliveries.expand': 'Show attempts of delivery {id}',
  'deliveries.more': 'Load more',
  'deliveries.redeliver': 'Redeliver',
  'deliveries.redeliverLabel': 'Redeliver delivery {id}',
  'deliveries.redelivered': 'Delivery {id} is queued again.',
  'deliveries.attempts': 'Attempts',
  'deliveries.noAttempts': 'Not attempted yet.',
  'deliveries.nextAttempt': 'Next attempt {when}.',
  'deliveries.response': 'Response excerpt',
  'deliveries.noResponse': 'No response body.',
  'deliveries.payload': 'Event payload',
  'deliveries.eventId': 'Event id',
  'deliveries.count': '{n} shown',

  'settings.title': 'Settings',
  'settings.intro': 'These settings govern every webhook of this relay.',
  'settings.pause': 'Sending',
  'settings.running': 'Deliveries are being sent.',
  'settings.pausedSince': 'Paused since {when}.',
  'settings.pauseReason': 'Reason (optional)',
  'settings.pauseBtn': 'Pause deliveries',
  'settings.resumeBtn': 'Resume deliveries',
  'settings.pausedToast': 'Deliveries are paused.',
  'settings.resumedToast': 'Deliveries resumed.',
  'settings.absence': 'Absence days',
  'settings.absenceHint': 'Nothing is sent on these days; deliveries wait.',
  'settings.window': 'Delivery window',
  'settings.windowOn': 'Send only within a daily window',
  'settings.windowHint': 'Outside the window deliveries wait. The window may cross midnight (22:00–06:00).',
  'settings.windowStart': 'From',
  'settings.windowEnd': 'Until',
  'settings.timeZone': 'Time zone',
  'settings.alerts': 'Alerts and retention',
  'settings.threshold': 'Alert after this many failed deliveries in a row',
  'settings.disableAfter': 'Disable a webhook failing continuously for (hours)',
  'settings.retention': 'Keep events and deliveries for (days)',
  'settings.allowHTTP': 'Accept http:// webhook URLs (development only)',
  'settings.saved': 'Settings saved.',
  'weekday.monday': 'Monday',
  'weekday.tuesday': 'Tuesday',
  'weekday.wednesday': 'Wednesday',
  'weekday.thursday': 'Thursday',
  'weekday.friday': 'Friday',
  'weekday.saturday': 'Saturday',
  'weekday.sunday': 'Sunday',

  'unit.ms': '{n} ms',
  'error.generic': 'Something went wrong: {reason}',
  'error.load': 'Could not load: {reason}',
};

const fr = {
  skip: 'Aller au contenu',
  close: 'Fermer',
  cancel: 'Annuler',
  save: 'Enregistrer',
  loading: 'Chargement…',
  retry: 'Réessayer',
  'lang.label': 'Langue',
  'nav.label': 'Principal',
  'nav.webhooks': 'Webhooks',
  'nav.deliveries': 'Livraisons',
  'nav.settings': 'Paramètres',
  signout: 'Se déconnecter',
  'who.operator': 'Opérateur',
  'who.owner': 'Propriétaire : {owner}',
  'who.ownerUnknown': 'Jeton propriétaire',
  'signin.title': 'Connexion',
  'signin.intro': 'Utilisez un jeton d’API : le jeton opérateur, ou un jeton propriétaire créé avec relay tokens create.',
  'signin.token': 'Jeton d’API',
  'signin.hint': 'Conservé pour cet onglet uniquement (session storage).',
  'signin.submit': 'Se connecter',
  'signin.empty': 'Saisissez un jeton.',
  'signin.wrong': 'Jeton incorrect : le serveur l’a refusé ({reason}).',
  'signin.unreachable': 'Le serveur est injoignable : {reason}',
  'signin.expired': 'Votre jeton n’est plus accepté. Reconnectez-vous.',
  'paused.banner': 'Les livraisons sont en pause{reason}. Rien n’est perdu : elles attendent la reprise.',

  'webhooks.title': 'Webhooks',
  'webhooks.new': 'Nouveau webhook',
  'webhooks.empty': 'Aucun webhook pour l’instant. Créez-en un pour recevoir des événements.',
  'webhooks.caption': 'Vos webhooks',
  'col.name': 'Nom',
  'col.url': 'URL',
  'col.events': 'Événements',
  'col.status': 'Statut',
  'col.actions': 'Actions',
  'col.owner': 'Propriétaire',
  'owner.operator': 'opérateur',
  'webhook.rename': 'Renommer {name}',
  'webhook.renameHint': 'Entrée pour enregistrer, Échap pour annuler',
  'webhook.renamed': 'Renommé en « {name} ».',
  'webhook.nameLabel': 'Nouveau nom pour {name}',
  'webhook.toggle': 'Activé : {name}',
  'webhook.enabled': 'Activé',
  'webhook.disabled': 'Désactivé',
  'webhook.nowEnabled': '« {name} » est activé.',
  'webhook.nowDisabled': '« {name} » est désactivé.',
  'webhook.disabledReason': 'Désactivé : {reason}',
  'webhook.failing': '{n} échecs d’affilée',
  'webhook.lastError': 'Dernière erreur : {error}',
  'action.edit': 'Modifier',
  'action.test': 'Tester',
  'action.delete': 'Supprimer',
  'action.editLabel': 'Modifier {name}',
  'action.testLabel': 'Envoyer un événement de test à {name}',
  'action.deleteLabel': 'Supprimer {name}',
  'test.sent': 'Test envoyé — {code} en {ms} ms',
  'test.failed': 'Échec : {reason}',
  'test.httpStatus': 'HTTP {code}',
  'delete.title': 'Supprimer le webhook',
  'delete.confirm': 'Êtes-vous sûr ? « {name} » sera supprimé avec son historique de livraisons. C’est irréversible.',
  'delete.ok': 'Supprimer',
  'delete.done': '« {name} » a été supprimé.',

  'modal.new': 'Nouveau webhook',
  'modal.edit': 'Webhook « {name} »',
  'tab.create': 'Créer',
  'tab.edit': 'Modifier',
  'tab.stats': 'Stats',
  'tabs.label': 'Webhook',
  'form.name': 'Nom',
  'form.namePlaceholder': 'Notifications Slack',
  'form.url': 'URL',
  'form.urlHint': 'Le point d’arrivée des requêtes POST. HTTPS uniquement.',
  'form.urlHintHTTP': 'http:// est accepté sur ce serveur (allow_http est activé : développement uniquement).',
  'form.events': 'Événements',
  'form.eventsHint': 'Cochez des types d’événements, ou ajoutez un motif comme thread.* (tous les événements thread) ou * (tout).',
  'form.noEventTypes': 'Aucun événement émis pour l’instant : ajoutez les types ou motifs attendus.',
  'form.pattern': 'Ajouter un type d’événement ou un motif',
  'form.patternPlaceholder': 'thread.*',
  'form.addPattern': 'Ajouter',
  'form.format': 'Format',
  'form.format.json': 'JSON (signé, Standard Webhooks)',
  'form.format.slack': 'Message Slack',
  'form.format.discord': 'Message Discord',
  'form.create': 'Créer le webhook',
  'form.save': 'Enregistrer',
  'form.saved': 'Modifications de « {name} » enregistrées.',
  'form.created': '« {name} » a été créé.',
  'form.fixErrors': 'Corrigez les champs signalés.',
  'err.required': 'Ce champ est obligatoire.',
  'err.urlInvalid': 'Saisissez une URL complète, comme https://example.com/hooks.',
  'err.urlHTTPS': 'L’URL doit commencer par https://.',
  'err.urlScheme': 'Seules les URL https:// sont acceptées.',
  'err.eventsRequired': 'Choisissez au moins un événement ou ajoutez un motif.',
  'err.pattern': '« {p} » n’est pas un type d’événement ni un motif (thread.created, thread.* ou *).',
  'secret.title': 'Webhook créé',
  'secret.text': 'Voici le secret de signature. Il n’est affiché qu’une fois : copiez-le maintenant et gardez-le avec le destinataire.',
  'secret.label': 'Secret de signature',
  'secret.copy': 'Copier',
  'secret.copied': 'Copié !',
  'secret.copyFailed': 'La copie a échoué : sélectionnez le texte et copiez-le à la main.',
  'secret.done': 'Terminé',
  'secret.hidden': 'Le secret a été affiché à la création du webhook et ne peut plus l’être.',

  'stats.h24': 'Dernières 24 heures',
  'stats.d7': '7 derniers jours',
  'stats.deliveries': 'Livraisons',
  'stats.successRate': 'Taux de succès',
  'stats.p50': 'Durée p50',
  'stats.p95': 'Durée p95',
  'stats.backlog': 'En attente',
  'stats.chart': 'Livraisons par heure, dernières 24 heures',
  'stats.chartEmpty': 'Aucune livraison ces dernières 24 heures.',
  'stats.chartBar': '{hour} : {ok} réussies, {failed} échouées, {pending} en attente',
  'stats.latest': 'Dernières tentatives',
  'stats.latestEmpty': 'Aucune tentative pour l’instant. Utilisez Tester pour en envoyer une.',
  'stats.allDeliveries': 'Voir toutes les livraisons',
  'col.time': 'Heure',
  'col.event': 'Événement',
  'col.code': 'Code',
  'col.duration': 'Durée',
  'col.error': 'Erreur',
  'col.attempts': 'Tentatives',
  'col.webhook': 'Webhook',
  'col.attempt': 'Tentative',
  'col.outcome': 'Issue',
  'col.retryAfter': 'Retry-After',

  'status.pending': 'En attente',
  'status.delivering': 'En cours',
  'status.succeeded': 'Réussie',
  'status.failed': 'Échouée',
  'events.all': 'tous les événements',

  'deliveries.title': 'Livraisons',
  'deliveries.live': 'Les nouvelles tentatives apparaissent automatiquement.',
  'deliveries.empty': 'Aucune livraison ne correspond à ces filtres.',
  'deliveries.caption': 'Journal des livraisons',
  'filter.status': 'Statut',
  'filter.days': 'Période',
  'filter.webhook': 'Webhook',
  'filter.eventType': 'Type d’événement',
  'filter.any': 'Tous',
  'filter.day1': 'Dernières 24 heures',
  'filter.days7': '7 derniers jours',
  'filter.days30': '30 derniers jours',
  'filter.days90': '90 derniers jours',
  'filter.reset': 'Réinitialiser les filtres',
  'deliveries.expand': 'Afficher les tentatives de la livraison {id}',
  'deliveries.more': 'Afficher plus',
  'deliveries.redeliver': 'Relivrer',
  'deliveries.redeliverLabel': 'Relivrer la livraison {id}',
  'deliveries.redelivered': 'La livraison {id} est remise en file.',
  'deliveries.attempts': 'Tentatives',
  'deliveries.noAttempts': 'Pas encore tentée.',
  'deliveries.nextAttempt': 'Prochaine tentative {when}.',
  'deliveries.response': 'Extrait de la réponse',
  'deliveries.noResponse': 'Pas de corps de réponse.',
  'deliveries.payload': 'Contenu de l’événement',
  'deliveries.eventId': 'Id de l’événement',
  'deliveries.count': '{n} affichées',

  'settings.title': 'Paramètres',
  'settings.intro': 'Ces paramètres s’appliquent à tous les webhooks de ce relay.',
  'settings.pause': 'Envoi',
  'settings.running': 'Les livraisons sont envoyées.',
  'settings.pausedSince': 'En pause depuis {when}.',
  'settings.pauseReason': 'Motif (facultatif)',
  'settings.pauseBtn': 'Mettre en pause',
  'settings.resumeBtn': 'Reprendre les livraisons',
  'settings.pausedToast': 'Les livraisons sont en pause.',
  'settings.resumedToast': 'Les livraisons ont repris.',
  'settings.absence': 'Jours d’absence',
  'settings.absenceHint': 'Rien n’est envoyé ces jours-là ; les livraisons attendent.',
  'settings.window': 'Plage d’envoi',
  'settings.windowOn': 'N’envoyer que pendant une plage horaire quotidienne',
  'settings.windowHint': 'Hors de la plage, les livraisons attendent. La plage peut passer minuit (22:00–06:00).',
  'settings.windowStart': 'De',
  'settings.windowEnd': 'À',
  'settings.timeZone': 'Fuseau horaire',
  'settings.alerts': 'Alertes et conservation',
  'settings.threshold': 'Alerter après ce nombre de livraisons échouées d’affilée',
  'settings.disableAfter': 'Désactiver un webhook en échec continu depuis (heures)',
  'settings.retention': 'Conserver événements et livraisons pendant (jours)',
  'settings.allowHTTP': 'Accepter les URL http:// (développement uniquement)',
  'settings.saved': 'Paramètres enregistrés.',
  'weekday.monday': 'Lundi',
  'weekday.tuesday': 'Mardi',
  'weekday.wednesday': 'Mercredi',
  'weekday.thursday': 'Jeudi',
  'weekday.friday': 'Vendredi',
  'weekday.saturday': 'Samedi',
  'weekday.sunday': 'Dimanche',

  'unit.ms': '{n} ms',
  'error.generic': 'Une erreur est survenue : {reason}',
  'error.load': 'Chargement impossible : {reason}',
};

const dictionaries = { en, fr };
// Exported for the browser test that checks both languages have every key.
export const DICTIONARIES = dictionaries;

/** detect picks the language: saved choice, then the browser's list. */
function detect() {
  let saved = null;
  try {
    saved = localStorage.getItem(LANG_KEY);
  } catch {
    // storage disabled: fall back to the browser's languages
  }
  if (saved && dictionaries[saved]) return saved;
  const prefs = navigator.languages && navigator.languages.length ? navigator.languages : [navigator.language || 'en'];
  for (const p of prefs) {
    const base = String(p).toLowerCase().split('-')[0];
    if (dictionaries[base]) return base;
  }
  return 'en';
}

let current = detect();
const listeners = [];

export function lang() {
  return current;
}

/** t translates key, replacing {name} with params.name. */
export function t(key, params) {
  let s = dictionaries[current][key] ?? en[key];
  if (s === undefined) {
    console.warn('i18n: missing key', key);
    return key;
  }
  if (params) s = s.replace(/\{(\w+)\}/g, (m, name) => (name in params ? String(params[name]) : m));
  return s;
}

/** setLang switches the language, remembers it and re-renders. */
export function setLang(l) {
  if (!dictionaries[l] || l === current) return;
  current = l;
  try {
    localStorage.setItem(LANG_KEY, l);
  } catch {
    // not remembered, still switched
  }
  applyStatic(document);
  for (const fn of listeners) fn(l);
}

export function onLangChange(fn) {
  listeners.push(fn);
}

/** applyStatic translates the data-i18n markup under root. */
export function applyStatic(root) {
  document.documentElement.lang = current;
  document.title = current === 'fr' ? 'Console relay' : 'relay console';
  for (const el of root.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll('[data-i18n-attr]')) {
    for (const pair of el.dataset.i18nAttr.split(';')) {
      const [attr, key] = pair.split(':');
      el.setAttribute(attr.trim(), t(key.trim()));
    }
  }
  for (const sel of root.querySelectorAll('.lang-select')) sel.value = current;
}
